"""CROWN's intermediate bounds of a convolution's neurons by back-substitution in *patches*.

A neuron ``(c, i, j)`` of a convolution's output depends on a ``K x K`` window of the layer
below, on a ``K' x K'`` window of the layer below that, and so on. The dense back-substitution
(``crown._backsub``) carries, for every neuron, a coefficient map as large as each layer it
walks through, nearly all of it zeros; here each row carries only its window (its *patch*,
as auto_LiRPA's ``Patches``): ``(rows, C, K, K)`` on a map, placed at ``(i S - P, j S - P)``.

* through a convolution (weight ``(C_out, C_in, k, k)``, stride ``s``, padding ``p``): the
  patch becomes ``conv_transpose(patch, W, s)``, of side ``(K - 1) s + k``, placed with stride
  ``S s`` and padding ``P s + p``; the bias adds ``sum(patch * b)``;
* through a ReLU: the patch is multiplied by the relaxation's slopes read at its window (the
  lower slope where the coefficient is positive, the upper one where negative), as the dense
  rule does per coordinate; a channel-wise affine map scales it per channel;
* at the input: the window of the Linf box (or, for L2, of the clean image and the norm of
  the patch) concretises it.

Entries of a patch outside its map (the padding) are kept at zero. The rows are the same
linear functions as the dense ones, so the bounds are equal up to float rounding (the tests
compare both). Where the walk meets another operation (max or average pooling, Flatten) or a
patch grows as large as its map, the rows are written out densely and the dense walk goes on.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .network import AffineOp, ReLUOp

__all__ = ["patch_elements", "patch_neuron_bounds", "patchable", "relu_relaxation"]


def _square(v) -> Optional[int]:
    v = tuple(v) if isinstance(v, (tuple, list)) else (v, v)
    return int(v[0]) if len(set(v)) == 1 else None


def patchable(op) -> bool:
    """A convolution whose rows can start as patches: square stride and padding, no dilation."""
    m = getattr(op, "conv", None)
    return m is not None and _square(m.stride) is not None and _square(m.padding) is not None and \
        _square(m.dilation) == 1 and m.kernel_size[0] == m.kernel_size[1] and m.groups == 1


def _grows(op, k: int, shape: tuple) -> Optional[int]:
    """The side of a patch of side ``k`` pushed back through ``op``, or None where it goes dense instead."""
    if not patchable(op):
        return None
    side = (k - 1) * _square(op.conv.stride) + op.conv.kernel_size[0]
    return side if side * side < math.prod(shape[-2:]) else None


def patch_elements(ops: list, shapes: list, k: int) -> int:
    """The largest coefficient tensor per row of :func:`patch_neuron_bounds` for the output of ``ops[k - 1]``."""
    side = ops[k - 1].conv.kernel_size[0]
    most = shapes[k - 1][0] * side * side
    for i in range(k - 2, -1, -1):
        op = ops[i]
        if isinstance(op, ReLUOp) or (isinstance(op, AffineOp) and op.scale is not None):
            continue
        side = _grows(op, side, shapes[i])
        if side is None:
            return max(most, max(math.prod(s) for s in shapes[:i + 2]))
        most = max(most, shapes[i][0] * side * side)
    return most


class _Window:
    """Where the patches lie on a ``(C, H, W)`` map: side ``K``, stride ``S``, padding ``P``, at the grid ``positions``."""

    def __init__(self, k: int, s: int, p: int, grid: tuple[int, int], pos: Tensor, shape: tuple) -> None:
        self.k, self.s, self.p, self.shape = k, s, p, shape
        h, w = shape[-2:]
        ho, wo = grid
        self.pad_hw = (p, max(0, (wo - 1) * s - p + k - w), p, max(0, (ho - 1) * s - p + k - h))
        hp, wp = h + self.pad_hw[2] + self.pad_hw[3], w + self.pad_hw[0] + self.pad_hw[1]
        off = torch.arange(k, device=pos.device)
        r = (pos // wo)[:, None] * s + off[None, :]
        c = (pos % wo)[:, None] * s + off[None, :]
        self.index = (r[:, :, None] * wp + c[:, None, :]).flatten()  # (L * K * K,) into the padded map
        self.padded = (hp, wp)
        self.n = len(pos)

    def gather(self, t: Tensor) -> Tensor:
        """The windows of ``t`` (B, C, H, W) at the positions, as (B, 1, L, C, K, K); zero outside the map."""
        b, c = t.shape[:2]
        tp = F.pad(t, self.pad_hw).flatten(2)[:, :, self.index]
        # contiguous: products with the (large) patches then keep the patches' layout (no copies later)
        return tp.view(b, c, self.n, self.k, self.k).transpose(1, 2).contiguous().unsqueeze(1)

    def dense(self, P: Tensor) -> Tensor:
        """The patches (B, R, L, C, K, K) written out on the map: (B, R * L, C, H, W)."""
        b, r, n, c = P.shape[:4]
        hp, wp = self.padded
        out = P.new_zeros(b, r, n, c, hp * wp)
        idx = self.index.view(1, 1, n, 1, -1).expand(b, r, n, c, -1)
        out.scatter_(4, idx, P.reshape(b, r, n, c, -1))
        top, left = self.pad_hw[2], self.pad_hw[0]
        h, w = self.shape[-2:]
        return out.view(b, r * n, c, hp, wp)[..., top:top + h, left:left + w]


def relu_relaxation(lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """CROWN's ReLU relaxation on ``[lo, hi]``: lower slope, upper slope and upper intercept per neuron
    (``crown.py``'s module docstring)."""
    unstable, active = (lo < 0) & (hi > 0), (lo >= 0).to(lo.dtype)
    up = torch.where(unstable, hi / (hi - lo).clamp(min=1e-12), active)
    up_b = torch.where(unstable, -up * lo, torch.zeros_like(lo))
    low = torch.where(unstable, (hi >= -lo).to(lo.dtype), active)
    return low, up, up_b


def _conv_back(P: Tensor, m) -> Tensor:
    """``conv_transpose2d(P, W, stride)`` of many small patches (B, R, L, C_out, K, K) -> (B, R, L, C_in, K', K').

    Into few input channels (the image's) a matrix product and a fold are faster on a CPU (measured)."""
    lead, (co, k) = P.shape[:-3], P.shape[-3:-1]
    w = m.weight
    ci, kk, s = w.shape[1], w.shape[-1], _square(m.stride)
    side = (k - 1) * s + kk
    flat = P.reshape(-1, co, k, k)
    if ci * kk * kk > 16:
        return F.conv_transpose2d(flat, w, None, s).view(*lead, ci, side, side)
    cols = w.reshape(co, ci * kk * kk).t() @ flat.reshape(-1, co, k * k)
    return F.fold(cols, (side, side), kk, stride=s).view(*lead, ci, side, side)


def patch_neuron_bounds(ops: list, shapes: list, k: int, pre: dict, x: Tensor, eps: float, norm: str,
                        channels: Tensor, positions: Tensor, dense_backsub) -> tuple[Tensor, Tensor]:
    """Lower and upper CROWN bounds (B, len(channels), len(positions)) of the neurons ``channels x positions``
    (flat grid indices) of the output of ``ops[k - 1]``, a convolution.

    ``dense_backsub(i, A, const)`` finishes a walk densely from the input of ``ops[i]``."""
    conv = ops[k - 1].conv
    b, nc, grid = x.shape[0], len(channels), shapes[k][1:]
    win = _Window(conv.kernel_size[0], _square(conv.stride), _square(conv.padding), grid, positions, shapes[k - 1])
    w = conv.weight[channels]
    P = torch.cat([w, -w])[None, :, None] * win.gather(w.new_ones(1, *shapes[k - 1]))  # (1, R, L, C, K, K)
    const = P.new_zeros(1, 2 * nc, 1) if conv.bias is None else torch.cat(
        [conv.bias[channels], -conv.bias[channels]]).view(1, -1, 1)
    i = k - 2
    while i >= 0:
        op, shape = ops[i], shapes[i]
        if isinstance(op, ReLUOp):
            low, up, up_b = (win.gather(t) for t in relu_relaxation(*pre[i]))
            p_neg = P.clamp(max=0)
            const = const + (p_neg * up_b).flatten(3).sum(-1)
            P = torch.addcmul(P * low, p_neg, up - low)  # the lower slope on P+, the upper one on P-
        elif isinstance(op, AffineOp) and op.scale is not None:
            const = const + (P * op.bias().reshape(-1, 1, 1)).flatten(3).sum(-1)
            P = P * op.scale().reshape(-1, 1, 1)
        elif isinstance(op, AffineOp) and _grows(op, win.k, shape) is not None:
            m = op.conv
            if m.bias is not None:
                const = const + (P * m.bias.view(-1, 1, 1)).flatten(3).sum(-1)
            P = _conv_back(P, m)
            win = _Window(P.shape[-1], win.s * _square(m.stride), win.p * _square(m.stride) + _square(m.padding),
                          grid, positions, shape)
            P = P * win.gather(P.new_ones(1, *shape))
        else:
            P = P.expand(b, -1, -1, -1, -1, -1)
            bound = dense_backsub(i + 1, win.dense(P), const.expand(b, -1, P.shape[2]).reshape(b, -1))
            bound = bound.view(b, 2 * nc, -1)
            return bound[:, :nc], -bound[:, nc:]
        i -= 1
    if norm == "linf":
        lo, hi = (x - eps).clamp(0.0, 1.0), (x + eps).clamp(0.0, 1.0)  # the box's centre and radius:
        mid, rad = win.gather((hi + lo) / 2), win.gather((hi - lo) / 2)  # min of P z is P mid - |P| rad
        bound = (P * mid).flatten(3).sum(-1) - (P.abs() * rad).flatten(3).sum(-1) + const
    else:
        bound = (P * win.gather(x)).flatten(3).sum(-1) - eps * P.flatten(3).norm(dim=-1) + const
    bound = bound.expand(b, -1, -1)
    return bound[:, :nc], -bound[:, nc:]
