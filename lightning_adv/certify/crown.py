"""Linear relaxation with back-substitution: CROWN (Zhang et al. 2018, "Efficient neural network
robustness certification with general activation functions"), DeepPoly-style.

The margin ``C z`` is written as a linear function of the input by walking the network
backwards: an affine operation is transposed exactly; a non-linear one is replaced, per
neuron, by a linear lower or upper bound valid on its input box, the lower one where the
coefficient is positive and the upper one where it is negative:

* ReLU on ``[l, u]`` with ``l < 0 < u``: upper ``u (x - l) / (u - l)``; lower ``a x`` with the
  adaptive slope ``a = 1 if u >= -l else 0``; exact when stable;
* max pooling (DeepPoly): lower ``x_i*`` with ``i*`` the input of largest lower bound; upper
  ``x_i*`` when ``l_i* >= u_j`` for every other ``j`` of the window, else the constant ``max u``.

The linear function is then minimised over the ball in closed form: over the Linf ball
intersected with [0, 1] (``A+ lo + A- hi``), or over the L2 ball (``A x - eps ||A||_2``; the box
is ignored there, which is sound and only looser).

The input boxes of the non-linear operations ("intermediate bounds") come from the same
back-substitution, one row per neuron (``intermediate='crown'``: full CROWN, the cost grows
with the number of neurons; the rows of a convolution's neurons are walked as patches, their
receptive fields only, by ``patches.py``), intersected with IBP's boxes for Linf; or from IBP alone
(``intermediate='ibp'``: CROWN-IBP, Zhang et al. 2020, the cost of two forward passes).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .ibp import check_ball, concretize_box, input_box, interval_bounds, margin_spec
from .network import AffineOp, BoundNetwork, MaxPoolOp, ReLUOp
from .patches import patch_elements, patch_neuron_bounds, patchable, relu_relaxation

__all__ = ["crown_margin", "crown_layer_bounds", "INTERMEDIATE"]

INTERMEDIATE = ("crown", "ibp")
#: elements of one coefficient tensor while computing intermediate bounds (chunks of neurons)
_CHUNK_ELEMENTS = 1 << 24


def _relu_back(A: Tensor, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
    low, up, up_b = relu_relaxation(lo, hi)
    b, s = A.shape[:2]
    a_neg = A.clamp(max=0)
    const = torch.bmm(a_neg.reshape(b, s, -1), up_b.reshape(b, -1, 1)).squeeze(-1)
    return torch.addcmul(A * low.unsqueeze(1), a_neg, (up - low).unsqueeze(1)), const  # low on A+, up on A-


def _maxpool_back(A: Tensor, lo: Tensor, hi: Tensor, op: MaxPoolOp) -> tuple[Tensor, Tensor]:
    b, s = A.shape[:2]
    c, h, w = lo.shape[1:]
    k, st = op.kernel, op.stride
    lw = F.unfold(lo, k, stride=st).view(b, c, k * k, -1)
    uw = F.unfold(hi, k, stride=st).view(b, c, k * k, -1)
    lmax, istar = lw.max(2, keepdim=True)
    u_other = uw.scatter(2, istar, float("-inf")).max(2).values
    exact = (lmax.squeeze(2) >= u_other).unsqueeze(1).to(A.dtype)  # (B, 1, C, L)
    umax = uw.max(2).values.unsqueeze(1)
    a = A.reshape(b, s, c, -1)
    a_pos, a_neg = a.clamp(min=0), a.clamp(max=0)
    coef = a_pos + a_neg * exact
    const = (a_neg * (1 - exact) * umax).reshape(b, s, -1).sum(-1)
    win = a.new_zeros(b, s, c, k * k, a.shape[-1])
    win = win.scatter(3, istar.unsqueeze(1).expand(b, s, c, 1, a.shape[-1]), coef.unsqueeze(3))
    back = F.fold(win.reshape(b * s, c * k * k, -1), (h, w), k, stride=st)
    return back.view(b, s, c, h, w), const


def _concretize(A: Tensor, const: Tensor, x: Tensor, eps: float, norm: str) -> Tensor:
    if norm == "linf":
        return concretize_box(A, const, *input_box(x, eps))
    flat = A.reshape(A.shape[0], A.shape[1], -1)
    return (flat * x.reshape(x.shape[0], 1, -1)).sum(-1) - eps * flat.norm(dim=-1) + const


def _backsub(ops: list, shapes: list, k: int, A: Tensor, pre: dict, x: Tensor, eps: float, norm: str,
             const: Optional[Tensor] = None) -> Tensor:
    """Lower bound of ``A . (input of ops[k]) + const`` over the ball, (B, S)."""
    const = A.new_zeros(A.shape[:2]) if const is None else const
    for i in range(k - 1, -1, -1):
        op = ops[i]
        if isinstance(op, AffineOp):
            A, c = op.back(A, shapes[i])
        elif isinstance(op, ReLUOp):
            A, c = _relu_back(A, *pre[i])
        else:
            A, c = _maxpool_back(A, pre[i][0], pre[i][1], op)
        const = const + c
    return _concretize(A, const, x, eps, norm)


def _neuron_bounds(ops: list, shapes: list, k: int, pre: dict, x: Tensor, eps: float, norm: str,
                   rows: Tensor) -> tuple[Tensor, Tensor]:
    """CROWN bounds (B, len(rows)) of the neurons ``rows`` (flat indices) of the input of ``ops[k]``, in chunks."""
    shape, b = shapes[k], x.shape[0]
    if k > 0 and patchable(ops[k - 1]):
        return _conv_neuron_bounds(ops, shapes, k, pre, x, eps, norm, rows)
    n = math.prod(shape)
    widest = max(math.prod(s) for s in shapes[:k + 1])
    chunk = max(1, _CHUNK_ELEMENTS // (2 * b * widest))
    lows, highs = [], []
    for start in range(0, len(rows), chunk):
        part = rows[start:start + chunk]
        eye = torch.zeros(len(part), n, dtype=x.dtype, device=x.device)
        eye[torch.arange(len(part)), part] = 1.0
        spec = torch.cat([eye, -eye]).view(1, 2 * len(part), *shape).expand(b, -1, *shape)
        bound = _backsub(ops, shapes, k, spec, pre, x, eps, norm)
        lows.append(bound[:, :len(part)])
        highs.append(-bound[:, len(part):])
    return torch.cat(lows, 1), torch.cat(highs, 1)


def _conv_neuron_bounds(ops: list, shapes: list, k: int, pre: dict, x: Tensor, eps: float, norm: str,
                        rows: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`_neuron_bounds` after a convolution: patches (``patches.py``) on the channels x positions the rows
    touch, in chunks of channels; the rows' own bounds are returned."""
    grid = math.prod(shapes[k][1:])
    ch, pos = rows // grid, rows % grid
    channels, positions = ch.unique(), pos.unique()
    chunk = max(1, _CHUNK_ELEMENTS // (2 * x.shape[0] * len(positions) * patch_elements(ops, shapes, k)))
    lows, highs = [], []
    for start in range(0, len(channels), chunk):
        low, high = patch_neuron_bounds(ops, shapes, k, pre, x, eps, norm, channels[start:start + chunk], positions,
                                        lambda i, A, c: _backsub(ops, shapes, i, A, pre, x, eps, norm, c))
        lows.append(low)
        highs.append(high)
    ci, pi = torch.searchsorted(channels, ch), torch.searchsorted(positions, pos)
    return torch.cat(lows, 1)[:, ci, pi], torch.cat(highs, 1)[:, ci, pi]


def _crown_box(ops: list, shapes: list, k: int, pre: dict, x: Tensor, eps: float, norm: str,
               box: Optional[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """The input box of ``ops[k]``: CROWN's, intersected with IBP's ``box`` (both sound) where given.

    Only the neurons IBP cannot decide are back-substituted when ``ops[k]`` is a ReLU: the
    relaxation of a stable neuron is exact whatever its bounds. After a monotone op the box
    is its interval image (CROWN is no tighter there); after one affine map, IBP's box is exact."""
    if k > 0 and not isinstance(ops[k - 1], AffineOp):
        return ops[k - 1].interval(*pre[k - 1])
    if box is not None and all(isinstance(op, AffineOp) for op in ops[:k]) and \
            sum(op.mixing for op in ops[:k]) <= 1:
        return box  # one affine map of the input box (up to coordinate-wise ones): IBP's box is exact
    b, shape = x.shape[0], shapes[k]
    if box is None:
        lo = torch.full((b, math.prod(shape)), float("-inf"), dtype=x.dtype, device=x.device)
        hi = -lo
    else:
        lo, hi = box[0].reshape(b, -1).clone(), box[1].reshape(b, -1).clone()
    todo = ((lo < 0) & (hi > 0)).any(0) if isinstance(ops[k], ReLUOp) and box is not None else \
        torch.ones(lo.shape[1], dtype=torch.bool, device=x.device)
    rows = todo.nonzero().squeeze(1)
    if len(rows):
        low, high = _neuron_bounds(ops, shapes, k, pre, x, eps, norm, rows)
        lo[:, rows], hi[:, rows] = torch.maximum(lo[:, rows], low), torch.minimum(hi[:, rows], high)
    return lo.view(b, *shape), hi.view(b, *shape)


def crown_layer_bounds(net: BoundNetwork, x: Tensor, eps: float, norm: str = "linf",
                       intermediate: str = "crown") -> tuple[list, list, dict]:
    """The operations, their input shapes and the input box of every non-linear operation (index -> (lo, hi))."""
    if intermediate not in INTERMEDIATE:
        raise ValueError(f"certify: intermediate={intermediate!r} is not one of {INTERMEDIATE}")
    norm = check_ball(x, eps, norm)
    if intermediate == "ibp" and norm != "linf":
        raise ValueError(f"certify: CROWN-IBP takes its intermediate bounds from IBP, which bounds the Linf ball only; "
                         f"got norm={norm!r}: use method='crown' for L2")
    ops, shapes = net.ops(x)
    boxes = interval_bounds(ops, x, eps) if norm == "linf" else None
    pre: dict = {}
    for k, op in enumerate(ops):
        if isinstance(op, AffineOp):
            continue
        if intermediate == "ibp":
            pre[k] = boxes[k]  # type: ignore[index]  # IBP boxes: norm is linf (checked above)
            continue
        pre[k] = _crown_box(ops, shapes, k, pre, x, eps, norm, None if boxes is None else boxes[k])
    return ops, shapes, pre


def crown_margin(net: BoundNetwork, x: Tensor, y: Tensor, eps: float, norm: str = "linf",
                 intermediate: str = "crown") -> Tensor:
    """Lower bounds of ``z_y - z_j`` over the ball, shape (B, K) (column y is 0).

    ``intermediate='ibp'`` is CROWN-IBP's bound (Linf only); ``'crown'`` full CROWN (Linf or L2).
    """
    ops, shapes, pre = crown_layer_bounds(net, x, eps, norm, intermediate)
    spec = margin_spec(y, shapes[-1][0], x.dtype)
    return _backsub(ops, shapes, len(ops), spec, pre, x, eps, check_ball(x, eps, norm))
