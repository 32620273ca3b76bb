"""Per-example Jacobians layer by layer: the fast path of :func:`~lightning_adv.analysis.empirical_ntk`.

For a layer ``y = W * a + b`` the Jacobian of output ``f_k(x_i)`` with respect to ``W`` is the
product of the layer's input ``a_i`` and the backpropagated signal ``g_ki = d f_k(x_i) / d y_i``
(an outer product for ``nn.Linear``, the same summed over positions for ``nn.Conv2d``: unfolded
patches times ``g``; for an eval-mode BatchNorm ``xhat_i * g_ki`` summed over positions). One
forward of the whole batch records every ``a_i``, and one backward per output ``k`` of
``f_k`` summed over the batch gives every ``g_ki`` at once (in eval mode the examples do not
interact, so the sum separates). This is how per-example gradient libraries (BackPACK, Opacus)
work; it replaces ``vmap(jacrev)``, whose per-example convolution becomes a grouped convolution
(slow on CPUs). Memory: ``N * C * P_l`` for the largest layer ``l`` (one layer at a time).

Supported: ``nn.Linear``, ``nn.Conv2d`` (``groups=1``, zero padding) and BatchNorm with
running statistics, each called once per forward and owning its parameters. :func:`supported`
says whether a model qualifies; ``empirical_ntk`` falls back to ``torch.func`` otherwise.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["supported", "layerwise_ntk"]


def _trainable(m: nn.Module) -> list[tuple[str, Tensor]]:
    return [(k, p) for k, p in m.named_parameters(recurse=False) if p.requires_grad]


def _layer_ok(m: nn.Module) -> bool:
    if type(m) is nn.Linear:
        return True
    if type(m) is nn.Conv2d:
        return m.groups == 1 and m.padding_mode == "zeros" and isinstance(m.padding, tuple)
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


def _layer_kernel(m: nn.Module, a: Tensor, g: Tensor) -> Tensor:
    """``(N*C, N*C)``: the layer's share of the kernel (its trainable parameters) from its input ``a``
    (N, ...) and the output gradients ``g`` (N, C, ...), rows ordered (example, output)."""
    n, c = g.shape[:2]
    names = {k for k, _ in _trainable(m)}
    if isinstance(m, nn.Linear) and a.dim() == 2:  # Jacobian rows g a^T: <g a^T, g' a'^T> = (g.g')(a.a')
        gg = g.reshape(n * c, -1)
        ga = gg @ gg.T
        aa = (a @ a.T).repeat_interleave(c, 0).repeat_interleave(c, 1)
        return ga * aa * ("weight" in names) + ga * ("bias" in names)
    parts: dict[str, Tensor] = {}
    if isinstance(m, nn.Linear):
        a3, g4 = a.reshape(n, -1, a.shape[-1]), g.reshape(n, c, -1, g.shape[-1])  # positions in the middle
        parts["weight"] = torch.einsum("nkto,nti->nkoi", g4, a3)
        parts["bias"] = g4.sum(2)
    elif isinstance(m, nn.Conv2d):
        # checker: string paddings ('same') are not among the supported convolutions
        cols = F.unfold(a, m.kernel_size, dilation=m.dilation, padding=m.padding, stride=m.stride)  # type: ignore[arg-type]  # (N, Ci*kk, L)
        g4 = g.reshape(n, c * g.shape[2], -1)  # (N, C*Co, L)
        parts["weight"] = torch.bmm(g4, cols.transpose(1, 2))  # (N, C*Co, Ci*kk)
        parts["bias"] = g4.sum(-1)
    else:  # eval-mode BatchNorm: y = xhat * w + b per channel
        shape = (1, -1) + (1,) * (a.dim() - 2)
        # checker: m is the eval-mode BatchNorm here (supported() admits no other layer)
        xhat = (a - m.running_mean.view(shape)) * torch.rsqrt(m.running_var.view(shape) + m.eps)  # type: ignore[operator]
        dims = tuple(range(3, g.dim()))
        parts["weight"] = (g * xhat.unsqueeze(1)).sum(dims) if dims else g * xhat.unsqueeze(1)
        parts["bias"] = g.sum(dims) if dims else g
    kernel = None
    for k in names:  # the Gram matrix of each parameter's Jacobian rows, summed
        rows = parts[k].reshape(n * c, -1)
        kernel = rows @ rows.T if kernel is None else kernel + rows @ rows.T
    assert kernel is not None
    return kernel


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
    # all C backwards at once: cotangent k is output k of every example (vmapped over k)
    eye = torch.eye(c, dtype=f.dtype, device=f.device).unsqueeze(1).expand(c, n, c)
    grads = torch.autograd.grad(f, outs, grad_outputs=eye, is_grads_batched=True, allow_unused=True)
    kernel: Optional[Tensor] = None
    for m, g, o in zip(layers, grads, outs):
        g = (g if g is not None else o.new_zeros((c,) + o.shape)).detach().transpose(0, 1)  # (N, C, ...)
        part = _layer_kernel(m, inputs[m], g)
        kernel = part if kernel is None else kernel + part
    assert kernel is not None
    return kernel.reshape(n, c, n, c).permute(0, 2, 1, 3)
