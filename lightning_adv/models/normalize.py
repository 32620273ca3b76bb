"""Per-channel mean/std normalisation as the first layer of every model.

Project convention (pixel space): every model takes images in [0, 1], and mean/std
normalisation, when used at all, lives *inside* the model as its first layer. Attacks then
work in [0, 1] pixel units (``eps = 8/255`` means what the thesis means) and any outside
tool (AutoAttack, RobustBench) can attack a checkpoint directly.

The authors' ARD and TRADES code uses no normalisation at all, so the default here is the
identity. ``mean`` and ``std`` are registered as *non-persistent* buffers: they follow
``.to(device)``/``.double()`` like any buffer but are not part of ``state_dict()``, so a
model's state-dict keys stay exactly those of the authors' code (TRADES WRN-34-10
checkpoints load with ``strict=True``), whatever normalisation is configured. The flip
side: the normalisation constants are configuration, not weights. Record them in the
config (they are constructor arguments of every model).
"""
from __future__ import annotations

import numbers
from typing import Any, Optional, Sequence

import torch
from torch import Tensor, nn

from ..validation import check_int, check_real

__all__ = ["Normalize"]


def _as_float_list(name: str, value: Any) -> list[float]:
    """``value`` (a number or a sequence of numbers) as a list of finite floats."""
    if isinstance(value, Tensor):
        value = value.detach().flatten().tolist()
    elif isinstance(value, numbers.Real) and not isinstance(value, bool):
        value = [value]
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ValueError(
            f"{name} must be a sequence of floats, one per input channel (e.g. {name}=[0.5, 0.5, 0.5]), "
            f"got {value!r}"
        )
    out: list[float] = []
    for i, v in enumerate(value):
        out.append(check_real(f"{name}[{i}]", v, hint=f"in {name}={list(value)!r}"))
    if not out:
        raise ValueError(f"{name} must not be empty; give one value per input channel or None for no normalisation")
    return out


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel, or the identity when ``mean`` and ``std`` are None.

    Args:
        mean: per-channel means (length ``num_channels`` or 1, broadcast), or None.
        std: per-channel standard deviations, all > 0 (same length rules), or None.
        num_channels: the number of input channels the lengths are checked against; None
            accepts any length (the result then broadcasts against whatever comes in).

    ``mean`` and ``std`` must be given together (pass ``std=[1.0]`` to only subtract a mean).
    Both are stored as non-persistent buffers of shape (1, C, 1, 1) (see the module doc).
    The input is never modified in place.
    """

    mean: Optional[Tensor]
    std: Optional[Tensor]

    def __init__(
        self,
        mean: Optional[Sequence[float]] = None,
        std: Optional[Sequence[float]] = None,
        num_channels: Optional[int] = None,
    ) -> None:
        super().__init__()
        if num_channels is not None:
            num_channels = check_int("in_channels", num_channels, 1)
        if (mean is None) != (std is None):
            given, missing = ("mean", "std") if mean is not None else ("std", "mean")
            value = mean if mean is not None else std
            raise ValueError(
                f"{missing} must be given together with {given} (got {given}={value!r}, {missing}=None); pass both, "
                f"e.g. mean=[0.4914, 0.4822, 0.4465], std=[0.2471, 0.2435, 0.2616] "
                f"for CIFAR-10, or neither for no normalisation (the authors' default)"
            )
        if mean is None:
            self.register_buffer("mean", None, persistent=False)
            self.register_buffer("std", None, persistent=False)
            return
        mean_l = _as_float_list("mean", mean)
        std_l = _as_float_list("std", std)
        for i, s in enumerate(std_l):
            if s <= 0:
                raise ValueError(
                    f"std entries must be > 0, got std[{i}]={s} in std={std_l}; "
                    f"use the per-channel standard deviation of the data (e.g. 0.25), or std=None and mean=None "
                    f"for no normalisation"
                )
        target = num_channels if num_channels is not None else max(len(mean_l), len(std_l))
        for name, vals in (("mean", mean_l), ("std", std_l)):
            if len(vals) not in (1, target):
                raise ValueError(
                    f"{name} must have one entry per input channel (in_channels={target}) or a single entry "
                    f"(broadcast), got {len(vals)} entries: {name}={vals}"
                )
        mean_t = torch.tensor(mean_l, dtype=torch.get_default_dtype()).expand(target).clone()
        std_t = torch.tensor(std_l, dtype=torch.get_default_dtype()).expand(target).clone()
        self.register_buffer("mean", mean_t.view(1, target, 1, 1), persistent=False)
        self.register_buffer("std", std_t.view(1, target, 1, 1), persistent=False)

    @property
    def is_identity(self) -> bool:
        """True when no normalisation is configured."""
        return self.mean is None

    def forward(self, x: Tensor) -> Tensor:
        if self.mean is None or self.std is None:
            return x
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        if self.mean is None or self.std is None:
            return "identity"
        fmt = lambda t: "[" + ", ".join(f"{v:.4g}" for v in t.flatten().tolist()) + "]"  # noqa: E731
        return f"mean={fmt(self.mean)}, std={fmt(self.std)}"
