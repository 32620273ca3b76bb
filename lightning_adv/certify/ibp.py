"""Interval bound propagation (IBP; Gowal et al. 2018, "On the effectiveness of interval bound
propagation for training verifiably robust models").

Every operation maps a box ``[lo, hi]`` to a box containing its image: an affine map by
centre and radius (``W c + b``, ``|W| r``), a monotone one (ReLU, max pooling) end point by
end point. The margin ``z_y - z_j`` is bounded with the last layer folded into the
specification (``C W``, "elision" of Gowal et al., tighter than bounding the logits
separately): the box after the last non-linearity is concretised against the rows of
``C W``. The input box is the Linf ball intersected with the image box [0, 1] (every input
an attack may produce), so IBP is an Linf method; L2 balls go through CROWN.

Pure functions on :class:`~.network.BoundNetwork`; differentiable in the weights.
"""
from __future__ import annotations


import torch
from torch import Tensor

from ..attacks.threat import make_threat
from .network import AffineOp, BoundNetwork
from ..validation import check_real

__all__ = ["check_ball", "input_box", "margin_spec", "concretize_box", "interval_bounds", "back_affine", "ibp_margin"]


def check_ball(x: Tensor, eps: float, norm: str = "linf") -> str:
    """Validate the ball (``eps >= 0``, a known norm, Linf eps <= 1) and the images (in [0, 1]); the norm name."""
    check_real("eps", eps, minimum=0.0, hint="give the radius of the ball in [0, 1] pixel units")
    name = make_threat(norm, float(eps)).name
    if x.numel() and (float(x.min()) < 0 or float(x.max()) > 1):
        raise ValueError(f"certify: inputs must be images in [0, 1], got values in [{float(x.min()):.4g}, "
                         f"{float(x.max()):.4g}]; the ball is intersected with the image box [0, 1]")
    return name


def input_box(x: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """The Linf ball of radius ``eps`` around ``x`` intersected with [0, 1]."""
    return (x - eps).clamp(0.0, 1.0), (x + eps).clamp(0.0, 1.0)


def margin_spec(y: Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """``C`` of shape (B, K, K): row j is ``e_y - e_j`` (row y is zero), so ``C z`` are the margins."""
    eye = torch.eye(num_classes, dtype=dtype, device=y.device)
    return eye[y].unsqueeze(1) - eye.unsqueeze(0)


def concretize_box(A: Tensor, const: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    """``min over z in [lo, hi]`` of ``A z + const``, per example and row: (B, S)."""
    lo, hi = lo.unsqueeze(1), hi.unsqueeze(1)
    val = A.clamp(min=0) * lo + A.clamp(max=0) * hi
    return val.reshape(A.shape[0], A.shape[1], -1).sum(-1) + const


def interval_bounds(ops: list, x: Tensor, eps: float, upto: int | None = None) -> list[tuple[Tensor, Tensor]]:
    """Boxes of the input of every operation ``0..upto`` (default: all, plus the output's)."""
    box = input_box(x, eps)
    boxes = [box]
    for op in ops[:len(ops) if upto is None else upto]:
        box = op.interval(*box)
        boxes.append(box)
    return boxes


def back_affine(ops: list, shapes: list, start: int, stop: int, A: Tensor) -> tuple[Tensor, Tensor]:
    """Push coefficients ``A`` on the output of ``ops[stop - 1]`` back through the affine ops ``start..stop-1``."""
    const = A.new_zeros(A.shape[:2])
    for i in range(stop - 1, start - 1, -1):
        A, c = ops[i].back(A, shapes[i])
        const = const + c
    return A, const


def ibp_margin(net: BoundNetwork, x: Tensor, y: Tensor, eps: float, norm: str = "linf") -> Tensor:
    """Lower bounds of ``z_y - z_j`` over the Linf ball, shape (B, K) (column y is 0)."""
    if check_ball(x, eps, norm) != "linf":
        raise ValueError(f"certify: IBP bounds the Linf ball only, got norm={norm!r}; use method='crown' for L2")
    ops, shapes = net.ops(x)
    last = max([i for i, op in enumerate(ops) if not isinstance(op, AffineOp)], default=-1) + 1
    lo, hi = interval_bounds(ops, x, eps, upto=last)[-1]
    num_classes = shapes[-1][0]
    A, const = back_affine(ops, shapes, last, len(ops), margin_spec(y, num_classes, x.dtype))
    return concretize_box(A, const, lo, hi)
