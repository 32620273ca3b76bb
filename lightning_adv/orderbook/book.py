"""The tensor form of limit order book snippets shared by the chapter 3 code.

A :class:`BookSnippet` is a batch of order-book snapshots on a regular time grid (the
thesis samples the book every 0.01 s: a 60 s input is T = 6000 snapshots of the L best
levels per side) plus the executions that happened during the snippet, which the
order-book attacks need to decide when an attack order would have been executed.

Conventions (the contract between the data and the attack code):

* prices are float64 dollars (LOBSTER price / 10000), an empty level has price NaN and
  size 0; sizes are float32 shares; level 0 is the best price of its side;
* ``exec_step[b, e]`` is the grid step ``t`` whose interval (t-1, t] holds the execution's
  time, ``exec_price`` its price, ``exec_side`` +1 when a sell limit order (ask side) was
  executed, -1 for a buy limit order (bid side); padding is step -1 / side 0 / price NaN.

The class duck-types the few tensor attributes the attack suite uses (``shape``,
``device``, indexing, ``detach``), so an order-book attack runs through
:class:`lightning_adv.attacks.AttackSuite` like an image attack.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Sequence, Union

import torch
from torch import Tensor

__all__ = ["BookSnippet", "collate_snippets", "swa"]

_BOOK = ("ask_price", "ask_size", "bid_price", "bid_size")
_EXEC = ("exec_step", "exec_price", "exec_side")
_PAD = {"exec_step": -1, "exec_price": float("nan"), "exec_side": 0}
_DTYPES = {"ask_price": torch.float64, "ask_size": torch.float32, "bid_price": torch.float64,
           "bid_size": torch.float32, "exec_step": torch.int64, "exec_price": torch.float64, "exec_side": torch.int8}


@dataclass
class BookSnippet:
    """A batch of B order-book snippets of T grid steps and L levels per side (see the module doc)."""

    ask_price: Tensor   # (B, T, L) float64 dollars, NaN = empty level
    ask_size: Tensor    # (B, T, L) float32 shares, 0 = empty level
    bid_price: Tensor   # (B, T, L) float64 dollars, level 0 = best bid
    bid_size: Tensor    # (B, T, L) float32 shares
    exec_step: Tensor   # (B, E) int64 grid step of an execution, -1 = padding
    exec_price: Tensor  # (B, E) float64 dollars
    exec_side: Tensor   # (B, E) int8: +1 ask side executed, -1 bid side, 0 padding

    def __post_init__(self) -> None:
        shape = tuple(self.ask_size.shape)
        if len(shape) != 3:
            raise ValueError(f"BookSnippet.ask_size must have shape (B, T, L), got {shape}")
        for name in _BOOK:
            if tuple(getattr(self, name).shape) != shape:
                raise ValueError(f"BookSnippet.{name} has shape {tuple(getattr(self, name).shape)}, "
                                 f"expected {shape} like ask_size")
        eshape = tuple(self.exec_step.shape)
        if len(eshape) != 2 or eshape[0] != shape[0]:
            raise ValueError(f"BookSnippet.exec_step must have shape (B={shape[0]}, E), got {eshape}")
        for name in _EXEC:
            if tuple(getattr(self, name).shape) != eshape:
                raise ValueError(f"BookSnippet.{name} has shape {tuple(getattr(self, name).shape)}, expected {eshape}")

    # ------------------------------------------------------------ sizes
    @property
    def batch_size(self) -> int:
        return int(self.ask_size.shape[0])

    @property
    def steps(self) -> int:
        """T, the number of grid snapshots."""
        return int(self.ask_size.shape[1])

    @property
    def levels(self) -> int:
        """L, the number of price levels per side."""
        return int(self.ask_size.shape[2])

    @property
    def shape(self) -> torch.Size:
        """(B, T, L): what the attack suite compares between clean and adversarial inputs."""
        return self.ask_size.shape

    @property
    def device(self) -> torch.device:
        return self.ask_size.device

    def __len__(self) -> int:
        return self.batch_size

    # ------------------------------------------------------------ tensor-like
    def _map(self, fn: Any) -> "BookSnippet":
        return BookSnippet(**{f.name: fn(getattr(self, f.name)) for f in fields(self)})

    def to(self, device: Union[str, torch.device, torch.dtype, None] = None,
           non_blocking: bool = False) -> "BookSnippet":
        """Move every tensor to ``device`` (Lightning calls this with ``non_blocking``). A dtype argument
        is a no-op (the dtypes are fixed by the contract); generic code calls ``x_adv.to(x.dtype)``."""
        if device is None or isinstance(device, torch.dtype):
            return self
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the sizes (the perturbed part)."""
        return self.ask_size.dtype

    def detach(self) -> "BookSnippet":
        """Detached copy; inference-mode tensors (Lightning's test loop) are cloned so autograd can use them."""
        return self._map(lambda t: (t.clone() if t.is_inference() else t).detach())

    def clone(self) -> "BookSnippet":
        return self._map(lambda t: t.clone())

    def __getitem__(self, index: Any) -> "BookSnippet":
        """A sub-batch: ``index`` is an int, a slice, a list, or a bool/long tensor over the batch."""
        if isinstance(index, int):
            index = slice(index, index + 1) if index != -1 else slice(-1, None)
        elif isinstance(index, Tensor):
            index = index.to(self.device)
            if index.dim() == 0:
                index = index.unsqueeze(0)
        elif isinstance(index, (list, tuple)):
            index = torch.as_tensor(index, dtype=torch.long, device=self.device)
        return self._map(lambda t: t[index])

    def with_sizes(self, ask_size: Tensor, bid_size: Tensor) -> "BookSnippet":
        """The same snippet with other sizes (e.g. perturbed ones)."""
        return BookSnippet(self.ask_price, ask_size, self.bid_price, bid_size, self.exec_step,
                           self.exec_price, self.exec_side)


def collate_snippets(items: Sequence[BookSnippet]) -> BookSnippet:
    """Concatenate batches of snippets (each with a batch dimension, B >= 1) along the batch, padding
    the executions to the longest E with step -1, side 0, price NaN."""
    if not items:
        raise ValueError("collate_snippets got an empty list of snippets")
    batched = list(items)
    steps_levels = {tuple(it.shape[1:]) for it in batched}
    if len(steps_levels) != 1:
        raise ValueError(f"collate_snippets: snippets differ in (T, L): {sorted(steps_levels)}; sample them on one grid")
    e_max = max(int(it.exec_step.shape[1]) for it in batched)
    out: dict[str, Tensor] = {}
    for name in _BOOK:
        out[name] = torch.cat([getattr(it, name).to(_DTYPES[name]) for it in batched])
    for name in _EXEC:
        parts = []
        for it in batched:
            t = getattr(it, name).to(_DTYPES[name])
            pad = e_max - t.shape[1]
            if pad:
                t = torch.cat([t, torch.full((t.shape[0], pad), _PAD[name], dtype=t.dtype, device=t.device)], 1)
            parts.append(t)
        out[name] = torch.cat(parts)
    return BookSnippet(**out)


def swa(book: Union[BookSnippet, Tensor], ask_size: Tensor | None = None, bid_price: Tensor | None = None,
        bid_size: Tensor | None = None) -> Tensor:
    """Size-weighted average price of every snapshot, (B, T) float64:
    ``sum(price * size) / sum(size)`` over the L ask and L bid levels, empty (NaN-price) levels ignored.

    Call it as ``swa(snippet)`` or ``swa(ask_price, ask_size, bid_price, bid_size)``. It is
    differentiable in the sizes (the attacks' gradients flow through it). A snapshot with no
    shares at all has SWA NaN.
    """
    if isinstance(book, BookSnippet):
        ask_price, ask_size, bid_price, bid_size = book.ask_price, book.ask_size, book.bid_price, book.bid_size
    else:
        ask_price = book
        if ask_size is None or bid_price is None or bid_size is None:
            raise ValueError("swa: give a BookSnippet or all four of ask_price, ask_size, bid_price, bid_size")
    num = torch.zeros(ask_size.shape[:-1], dtype=torch.float64, device=ask_size.device)
    den = torch.zeros_like(num)
    for price, size in ((ask_price, ask_size), (bid_price, bid_size)):
        ok = torch.isfinite(price)
        s = torch.where(ok, size.to(torch.float64), torch.zeros((), dtype=torch.float64, device=size.device))
        num = num + (torch.where(ok, price, torch.zeros_like(price)) * s).sum(-1)
        den = den + s.sum(-1)
    return num / den
