"""The propagation function p of section 3.4.1: where attack orders sit in later snapshots.

An attack is a tensor of *placements* ``delta[b, i, side, level]`` (side 0 = ask, 1 = bid):
shares added at grid step ``i`` at the price that ``level`` has at step ``i``. Rules:

* an order placed at step i at price P stays in the book **at the price P** (not at its level
  index: the book moves) from snapshot i on;
* it is executed, and leaves the book, at the first grid step t > i with an execution at P on
  its side (the thesis' assumption: attack orders transact when other orders at the same price
  do); snapshot t and later no longer hold it (snapshot t is the book after the execution).
  An execution at the placement's own step i does not remove it (the execution happened in
  (i-1, i], before the order was placed at i);
* otherwise it stays until the end of the snippet;
* it adds to the size of whichever of the L visible levels of its side has price P at step t.
  When P is not among them (it moved beyond the L best, or the level emptied and P now lies
  between or outside the visible prices), the order is still live (it can still execute later,
  it still counts for capital and cost) but it is **not visible**: the snapshot's prices are
  never changed (the thesis perturbs only size entries), so no level is created for it.

Computation (differentiable in delta, exact for whole shares): the routing depends only on the
snippet. Every visible entry (b, t, side, level) gets the key (b, side, price in ticks); the
entries are sorted by (key, t); the live attack shares at an entry are a difference of one
float64 cumulative sum of the placements over the sorted entries, between the entry itself and
the first entry of its key at or after the key's last execution step <= t. Cost O(n log n) in the
n = B T 2 L entries plus O(n log E) for the E executions, no (T L)^2 matrix.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .book import BookSnippet

__all__ = ["ASK", "BID", "Routing", "routing", "placement_prices", "propagate_delta", "propagate", "unpropagated",
           "TICKS_PER_DOLLAR"]

ASK, BID = 0, 1
TICKS_PER_DOLLAR = 10_000  # LOBSTER's price unit


def placement_prices(snippet: BookSnippet) -> Tensor:
    """(B, T, 2, L) float64 prices of the placement coordinates (NaN: empty level, no placement)."""
    return torch.stack([snippet.ask_price, snippet.bid_price], dim=2)


@dataclass
class Routing:
    """The fixed 0/1 routing of placements to later snapshot entries of one snippet batch."""

    shape: tuple[int, int, int, int]   # (B, T, 2, L)
    order: Tensor      # (n,) flat indices of the visible entries, sorted by (key, t)
    lo: Tensor         # (n,) start index into the padded cumulative sum for each sorted entry
    exec_at: Tensor    # (B, T, 2, L) int64: step at which an order placed there executes; T = never
    valid: Tensor      # (B, T, 2, L) bool: a price exists there (a placement is allowed)


def _keys(snippet: BookSnippet) -> tuple[Tensor, Tensor, int]:
    """Per visible entry: (flat index, key code) with key = (b, side, tick); and the tick range."""
    prices = placement_prices(snippet)
    ticks = torch.round(torch.nan_to_num(prices, nan=0.0) * TICKS_PER_DOLLAR).long()
    ex_ticks = torch.round(torch.nan_to_num(snippet.exec_price, nan=0.0) * TICKS_PER_DOLLAR).long()
    span = int(max(int(ticks.max()) if ticks.numel() else 0, int(ex_ticks.max()) if ex_ticks.numel() else 0)) + 1
    return ticks, ex_ticks, span


def routing(snippet: BookSnippet) -> Routing:
    """Precompute the propagation of ``snippet`` (reused for every iterate of an attack)."""
    b, t, lv = snippet.batch_size, snippet.steps, snippet.levels
    dev = snippet.device
    prices = placement_prices(snippet)
    valid = torch.isfinite(prices)
    ticks, ex_ticks, span = _keys(snippet)
    bi = torch.arange(b, device=dev).view(b, 1, 1, 1)
    si = torch.arange(2, device=dev).view(1, 1, 2, 1)
    ti = torch.arange(t, device=dev).view(1, t, 1, 1)
    key = ((bi * 2 + si) * span + ticks)                      # (B, T, 2, L)
    code = (key * t + ti)                                     # unique per visible entry
    flat_valid = valid.reshape(-1).nonzero().squeeze(1)
    codes = code.reshape(-1)[flat_valid]
    codes, perm = torch.sort(codes)
    order = flat_valid[perm]
    # executions as codes of (key, step)
    ex_ok = (snippet.exec_side != 0) & (snippet.exec_step >= 0) & torch.isfinite(snippet.exec_price)
    ex_side = torch.where(snippet.exec_side.long() > 0, ASK, BID)
    ex_key = (torch.arange(b, device=dev).view(b, 1) * 2 + ex_side) * span + ex_ticks
    ex_codes = torch.sort((ex_key * t + snippet.exec_step.long())[ex_ok]).values
    n_ex = ex_codes.numel()
    ex_codes = torch.cat([ex_codes, ex_codes.new_full((1,), torch.iinfo(torch.int64).max)])  # sentinel
    base = (codes // t) * t
    # last execution at this key at or before the entry's step
    j = torch.searchsorted(ex_codes, codes, right=True) - 1
    last = torch.where(j >= 0, ex_codes[j.clamp(min=0)], torch.full_like(codes, -1))
    lo_code = torch.where(last >= base, last, base)
    lo = torch.searchsorted(codes, lo_code)                   # first sorted entry of the key at/after lo_code
    # first execution at the placement's key strictly after its step
    allc = code.reshape(-1)
    nxt = ex_codes[torch.searchsorted(ex_codes, allc, right=True).clamp(max=n_ex)]
    hit = (nxt != ex_codes[-1]) & (nxt // t == allc // t) & valid.reshape(-1)
    exec_at = torch.where(hit, nxt - (allc // t) * t, torch.full_like(allc, t)).view(b, t, 2, lv)
    return Routing((b, t, 2, lv), order, lo, exec_at, valid)


def propagate_delta(route: Routing, delta: Tensor) -> Tensor:
    """The attack shares visible in every snapshot entry, (B, T, 2, L), from placements ``delta`` (same shape).
    Placements at empty levels are ignored. Differentiable in ``delta``."""
    if tuple(delta.shape) != route.shape:
        raise ValueError(f"delta must have shape (B, T, 2, L) = {route.shape}, got {tuple(delta.shape)}")
    a = delta.reshape(-1)[route.order].to(torch.float64)
    csum = torch.cat([a.new_zeros(1), torch.cumsum(a, 0)])
    idx = torch.arange(1, a.numel() + 1, device=a.device)
    live = csum[idx] - csum[route.lo]
    out = torch.zeros(delta.numel(), dtype=torch.float64, device=delta.device)
    out = out.index_put((route.order,), live)
    return out.view(route.shape).to(delta.dtype)


def _with_added(snippet: BookSnippet, added: Tensor) -> BookSnippet:
    return snippet.with_sizes(snippet.ask_size + added[:, :, ASK].to(snippet.ask_size.dtype),
                              snippet.bid_size + added[:, :, BID].to(snippet.bid_size.dtype))


def propagate(snippet: BookSnippet, delta: Tensor, route: Routing | None = None) -> BookSnippet:
    """The perturbed snippet x + p(delta): sizes raised by the live attack orders, prices unchanged."""
    route = routing(snippet) if route is None else route
    return _with_added(snippet, propagate_delta(route, delta))


def unpropagated(snippet: BookSnippet, delta: Tensor) -> BookSnippet:
    """x + delta without propagation: each order only shows in the snapshot it is placed in (figure 3.3, left)."""
    valid = torch.isfinite(placement_prices(snippet))
    return _with_added(snippet, torch.where(valid, delta, torch.zeros_like(delta)))
