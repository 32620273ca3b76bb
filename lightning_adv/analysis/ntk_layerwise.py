"""Per-example Jacobians layer by layer: the fast path of :func:`~lightning_adv.analysis.empirical_ntk`.

For a layer ``y = W * a + b`` the Jacobian of output ``f_k(x_i)`` with respect to ``W`` is the
product of the layer's input ``a_i`` and the backpropagated signal ``g_ki = d f_k(x_i) / d y_i``
(an outer product for ``nn.Linear``, the same summed over positions for ``nn.Conv2d``: unfolded
patches times ``g``, per group; for an eval-mode BatchNorm ``xhat_i * g_ki`` summed over
positions). One forward of the whole batch records every ``a_i``, and ``C`` backwards (output
``f_k`` summed over the batch, one class at a time) give every ``g_ki`` (in eval mode the
examples do not interact, so the sum separates). This is how per-example gradient libraries
(BackPACK, Opacus) work; it replaces ``vmap(jacrev)``, whose per-example convolution becomes a
grouped convolution (slow on CPUs).

The kernel is ``sum_l G_l G_l^T`` over the layers' Jacobian rows ``G_l`` (``N*C x P_l``). A
Linear layer on ``(N, d)`` inputs never forms ``G_l`` (its share is ``(g g^T) * (a a^T)``); a
convolution forms it a slice of output channels at a time (at most :data:`CHUNK_ELEMENTS`
numbers), and each Gram product computes the upper triangle only, in row blocks. Where a
convolution has few output positions ``L`` (the 8x8 stage of a WideResNet) its share
``sum_{t,s} <g_ki(t), g_lj(s)> <a_i(t), a_j(s)>`` comes cheaper from the Grams of patches and of
output gradients over pairs of positions (:func:`conv_gram_macs` counts both ways). On one CPU
thread this does about as many multiply-adds as the per-example loop for convolutional nets
(``benchmarks/bench_analysis.py`` prints both counts): the gain there is 1.5-2x, not the
hundreds of an MLP.

Supported: ``nn.Linear``, ``nn.Conv2d`` (any stride, dilation, groups; zero padding) and
BatchNorm with running statistics, each called once per forward and owning its parameters.
:func:`supported` says whether a model qualifies; ``empirical_ntk`` falls back to ``torch.func``
otherwise.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["CHUNK_ELEMENTS", "conv_gram_macs", "supported", "layerwise_ntk"]

CHUNK_ELEMENTS = 2**25  # the most numbers of per-example Jacobian rows held at once (128 MiB in fp32)
_ROW_BLOCK = 64  # rows per block of the triangular Gram product


def _trainable(m: nn.Module) -> list[tuple[str, Tensor]]:
    return [(k, p) for k, p in m.named_parameters(recurse=False) if p.requires_grad]


def _layer_ok(m: nn.Module) -> bool:
    if type(m) is nn.Linear:
        return True
    if type(m) is nn.Conv2d:
        return m.padding_mode == "zeros" and isinstance(m.padding, tuple)
    return isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None and m.affine


def supported(model: nn.Module) -> bool:
    """Every module owning a trainable parameter is a supported layer, and no parameter is shared."""
    seen: set[int] = set()
    for m in model.modules():
        own = _trainable(m)
        if own and not _layer_ok(m):
            return False
        for _, p in own:
            if id(p) in seen:
                return False
            seen.add(id(p))
    return bool(seen)


def _add_gram(kernel: Tensor, rows: Tensor) -> None:
    """``kernel += rows rows^T`` on the upper triangle (blocks of rows; the lower one is left stale)."""
    m = rows.shape[0]
    for start in range(0, m, _ROW_BLOCK):
        stop = min(start + _ROW_BLOCK, m)
        kernel[start:stop, start:].addmm_(rows[start:stop], rows[start:].T)


def conv_gram_macs(n: int, c: int, length: int, out_channels: int, fan_in: int, groups: int) -> tuple[float, float]:
    """Multiply-adds of a convolution's share of the kernel (``N`` examples, ``C`` outputs, ``length``
    output positions, ``fan_in`` inputs per output channel) two ways: from the per-example Jacobian rows
    (their products and the upper triangle of their Gram matrix) and from the positions (patch and
    gradient Gram matrices over pairs of positions, pairs of examples ``i <= j``)."""
    co = out_channels // groups
    by_rows = n * c * length * out_channels * fan_in + (n * c) ** 2 * out_channels * fan_in / 2
    by_positions = groups * n * (n + 1) / 2 * (length**2 * (fan_in + c * co) + c * c * length * co)
    return by_rows, by_positions


def _conv_gram_by_rows(cols: Tensor, gs: list[Tensor], groups: int, kernel: Tensor) -> None:
    """Per-example Jacobian rows ``g_k cols`` a slice of output channels at a time, then their Gram matrix."""
    n, length, fan_in = cols.shape[0] // groups, cols.shape[1], cols.shape[2]
    c, co = len(gs), gs[0].shape[1] // groups
    step = max(1, CHUNK_ELEMENTS // (n * c * groups * fan_in))
    for o in range(0, co, step):
        width = min(step, co - o)
        rows = kernel.new_empty(c, n * groups, width, fan_in)  # (class, example, group): one Jacobian row
        for k, g in enumerate(gs):  # output channels are group-major
            torch.bmm(g.reshape(n * groups, co, length)[:, o:o + width], cols, out=rows[k])
        _add_gram(kernel, rows.reshape(c * n, -1))


def _conv_gram_by_positions(cols: Tensor, g: Tensor, kernel: Tensor) -> None:
    """``sum_{t,s} <g_ki(t), g_lj(s)> <a_i(t), a_j(s)>`` for patches ``cols`` (N, L, fan_in) and output
    gradients ``g`` (C, N, L, Co) of one group: cheaper than Jacobian rows where positions are few."""
    c, n, length, co = g.shape
    per_example = g.permute(1, 2, 0, 3)  # (N, L, C, Co)
    rows = per_example.permute(0, 2, 1, 3).reshape(n, c, length * co)  # G_i, (C, L*Co)
    out = kernel.new_zeros(n, n, c, c)  # [i, j, k, l] for i <= j
    for j in range(n):
        s = cols[: j + 1] @ cols[j].T  # (i, t, s): patch products
        y = (s.reshape(-1, length) @ per_example[j].reshape(length, c * co)).reshape(j + 1, length, c, co)
        out[: j + 1, j] = torch.bmm(rows[: j + 1], y.transpose(2, 3).reshape(j + 1, length * co, c))
    upper = torch.ones(n, n, dtype=torch.bool, device=out.device).triu().view(n, n, 1, 1)
    out = torch.where(upper, out, out.permute(1, 0, 3, 2))
    kernel += out.permute(2, 0, 3, 1).reshape(c * n, c * n)


def _conv_weight_gram(m: nn.Conv2d, a: Tensor, gs: list[Tensor], kernel: Tensor) -> None:
    """Add the Gram matrix of a convolution's weight Jacobian rows, whichever way costs fewer multiply-adds."""
    n, co = gs[0].shape[:2]
    c, groups = len(gs), m.groups
    # checker: string paddings ('same') are not among the supported convolutions
    cols = F.unfold(a, m.kernel_size, dilation=m.dilation, padding=m.padding, stride=m.stride)  # type: ignore[arg-type]
    length = cols.shape[-1]
    cols = cols.reshape(n * groups, -1, length).transpose(1, 2)  # (N*groups, L, Ci/groups*kk)
    by_rows, by_positions = conv_gram_macs(n, c, length, co, cols.shape[-1], groups)
    if by_positions >= by_rows or n * length * max(length, c * co) > CHUNK_ELEMENTS:
        _conv_gram_by_rows(cols, gs, groups, kernel)
        return
    cols = cols.reshape(n, groups, length, -1)
    for gi in range(groups):
        g = torch.stack([gk.reshape(n, groups, co // groups, length)[:, gi].transpose(1, 2) for gk in gs])
        _conv_gram_by_positions(cols[:, gi], g, kernel)


def _add_layer_kernel(m: nn.Module, a: Tensor, gs: list[Tensor], kernel: Tensor) -> None:
    """Add the layer's share of the ``(C*N, C*N)`` kernel (upper triangle; its trainable parameters)
    from its input ``a`` (N, ...) and the output gradients ``gs`` (C of them, each like the output),
    rows ordered (output, example)."""
    n, c = a.shape[0], len(gs)
    names = {k for k, _ in _trainable(m)}
    if isinstance(m, nn.Conv2d):
        if "weight" in names:
            _conv_weight_gram(m, a, gs, kernel)
        if "bias" in names:
            _add_gram(kernel, torch.cat([g.flatten(2).sum(-1) for g in gs]))
        return
    g = torch.stack(gs)  # (C, N, ...)
    if isinstance(m, nn.Linear) and a.dim() == 2:  # Jacobian rows g a^T: <g a^T, g' a'^T> = (g.g')(a.a')
        gg = g.reshape(c * n, -1)
        ga = gg @ gg.T
        if "weight" in names:
            kernel += ga * (a @ a.T).repeat(c, c)
        if "bias" in names:
            kernel += ga
        return
    parts: dict[str, Tensor] = {}
    if isinstance(m, nn.Linear):
        a3, g4 = a.reshape(n, -1, a.shape[-1]), g.reshape(c, n, -1, g.shape[-1])  # positions in the middle
        parts["weight"] = torch.einsum("knto,nti->knoi", g4, a3)
        parts["bias"] = g4.sum(2)
    else:  # eval-mode BatchNorm: y = xhat * w + b per channel
        shape = (1, -1) + (1,) * (a.dim() - 2)
        # checker: m is the eval-mode BatchNorm here (supported() admits no other layer)
        xhat = (a - m.running_mean.view(shape)) * torch.rsqrt(m.running_var.view(shape) + m.eps)  # type: ignore[operator]
        dims = tuple(range(3, g.dim()))
        parts["weight"] = (g * xhat).sum(dims) if dims else g * xhat
        parts["bias"] = g.sum(dims) if dims else g
    for k in names & parts.keys():  # the Gram matrix of each parameter's Jacobian rows, summed
        _add_gram(kernel, parts[k].reshape(c * n, -1))


def layerwise_ntk(model: nn.Module, x: Tensor) -> Tensor:
    """The ``(N, N, C, C)`` empirical NTK of a :func:`supported` model already in eval mode."""
    layers = [m for m in model.modules() if _trainable(m)]
    inputs: dict[nn.Module, Tensor] = {}
    outputs: dict[nn.Module, Tensor] = {}
    calls: dict[nn.Module, int] = {}

    def hook(m: nn.Module, inp: Any, out: Tensor) -> Tensor:
        calls[m] = calls.get(m, 0) + 1
        inputs[m] = inp[0].detach().clone()  # later in-place operations cannot change what was recorded
        outputs[m] = out
        return out.clone()  # an in-place op downstream (ReLU(inplace), +=) must not rebase ``out``

    handles = [m.register_forward_hook(hook) for m in layers]
    try:
        with torch.enable_grad():
            f = model(x)
    finally:
        for h in handles:
            h.remove()
    if any(calls.get(m, 0) != 1 for m in layers) or f.dim() != 2:
        raise ValueError("layerwise NTK: every parameterised layer must run exactly once and the output be (N, C)")
    n, c = f.shape
    outs = [outputs[m] for m in layers]
    # one backward per output k of every example (a vmapped backward falls back to a slower loop)
    per_class: list[list[Any]] = []
    for k in range(c):
        onehot = torch.zeros_like(f)
        onehot[:, k] = 1
        class_grads = torch.autograd.grad(f, outs, grad_outputs=onehot, retain_graph=k + 1 < c, allow_unused=True)
        per_class.append([(gr if gr is not None else torch.zeros_like(o)).detach() for gr, o in zip(class_grads, outs)])
    kernel = f.new_zeros(c * n, c * n)
    for idx, m in enumerate(layers):
        _add_layer_kernel(m, inputs[m], [grads[idx] for grads in per_class], kernel)
        for grads in per_class:
            grads[idx] = None  # free each layer's gradients once used
    kernel = kernel.triu() + kernel.triu(1).T
    return kernel.reshape(c, n, c, n).permute(1, 3, 0, 2)
