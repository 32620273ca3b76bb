"""The empirical neural tangent kernel (thesis eq. 6.5) and the statistics of figures 6.1-6.3.

``Phi[i, j, k, l] = sum_p d f_k(x_i) / d theta_p * d f_l(x_j) / d theta_p`` for N inputs and
the ``C`` outputs of the network: an ``(N, N, C, C)`` tensor, in eval mode so that every
example is processed independently. :func:`empirical_ntk` has two ways to the per-example
Jacobians, with the same values:

* ``layerwise`` (default where the model allows it: Linear, Conv2d and BatchNorm layers,
  ``analysis/ntk_layerwise.py``): one batched forward and ``C`` batched backwards give each
  layer's inputs and output gradients, whose products are the Jacobian rows, one layer at a
  time and, for a convolution, a slice of output channels at a time (at most
  ``ntk_layerwise.CHUNK_ELEMENTS`` numbers). Hundreds of times faster than a per-example loop
  for MLPs (no Jacobian is formed for a Linear layer), about 2x for convolutional nets on one CPU
  thread, where both do the same multiply-adds (``benchmarks/bench_analysis.py``, docs/analysis.md).
* ``vmap``: ``torch.func.vmap(jacrev(...))`` over a functional call of the module with its
  parameters *and buffers*, for any architecture. Memory ``N * C * P`` (``per_tensor``: one
  parameter tensor at a time; ``chunk_size`` bounds the working set of ``vmap``).
"""
from __future__ import annotations

from typing import Optional, cast

import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev, vmap

from ..attacks import module_mode
from ._utils import trainable_parameters
from .ntk_layerwise import layerwise_ntk, supported

NTK_METHODS = ("auto", "layerwise", "vmap")

__all__ = ["empirical_ntk", "empirical_ntk_loop", "kernel_correlation", "kernel_relative_change", "parameter_norm"]


def empirical_ntk(model: nn.Module, x: Tensor, chunk_size: Optional[int] = None,
                  per_tensor: bool = False, method: str = "auto") -> Tensor:
    """The ``(N, N, C, C)`` empirical NTK of ``model`` at inputs ``x`` (shape ``(N, ...)``).

    Derivatives are taken with respect to the trainable parameters; buffers and frozen
    parameters enter the call as constants. The model runs in eval mode (restored after).
    ``method``: ``auto`` (``layerwise`` where every parameterised layer is a Linear, Conv2d or
    BatchNorm, else ``vmap``), ``layerwise`` or ``vmap`` (see the module doc). For ``vmap``,
    ``per_tensor=True`` differentiates one parameter tensor at a time (one vmapped Jacobian per
    tensor; peak memory ``N * C * max_k P_k`` instead of ``N * C * P``) and ``chunk_size``
    chunks the examples; ``layerwise`` always works one layer at a time.
    """
    if method not in NTK_METHODS:
        raise ValueError(f"method must be one of {NTK_METHODS}, got method={method!r}")
    fast = supported(model)
    if method == "layerwise" and not fast:
        raise ValueError("method='layerwise' needs every parameterised layer to be an nn.Linear, nn.Conv2d (zero padding) "
                         "or BatchNorm with running statistics, run once per forward; use method='vmap'")
    if method != "vmap" and fast:
        with module_mode(model, "eval"):
            return layerwise_ntk(model, x)
    trainable = {k: v.detach() for k, v in trainable_parameters(model).items()}
    if not trainable:
        raise ValueError("the model has no trainable parameters")
    state = {k: v.detach() for k, v in model.named_buffers()}
    state.update({k: v.detach() for k, v in model.named_parameters()})
    groups = [[k] for k in trainable] if per_tensor else [list(trainable)]
    n = x.shape[0]
    kernel: Optional[Tensor] = None
    with module_mode(model, "eval"):
        for names in groups:
            def f(p: dict[str, Tensor], xi: Tensor) -> Tensor:
                return functional_call(model, {**state, **p}, (xi.unsqueeze(0),)).squeeze(0)

            jac = vmap(jacrev(f), in_dims=(None, 0), chunk_size=chunk_size)({k: trainable[k] for k in names}, x)
            for j in jac.values():
                j = j.reshape(n, j.shape[1], -1)  # (N, C, P_k)
                part = torch.einsum("iap,jbp->ijab", j, j)
                kernel = part if kernel is None else kernel + part
    assert kernel is not None
    return kernel


def empirical_ntk_loop(model: nn.Module, x: Tensor) -> Tensor:
    """The same kernel from one backward pass per (example, output): the reference of tests and benchmarks."""
    params = list(trainable_parameters(model).values())
    rows = []
    with module_mode(model, "eval"), torch.enable_grad():
        for i in range(x.shape[0]):
            out = model(x[i : i + 1]).squeeze(0)
            for k in range(out.shape[0]):
                grads = torch.autograd.grad(out[k], params, retain_graph=k + 1 < out.shape[0], allow_unused=True)
                rows.append(torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1)
                                       for g, p in zip(grads, params)]))
    jac = torch.stack(rows)  # (N * C, P)
    n = x.shape[0]
    c = jac.shape[0] // n
    return (jac @ jac.T).reshape(n, c, n, c).permute(0, 2, 1, 3)


def kernel_correlation(a: Tensor, b: Tensor) -> float:
    """Pearson correlation ``Cov(a, b) / sigma(a) / sigma(b)`` of the vectorised kernels (figure 6.1b)."""
    a, b = a.detach().double().reshape(-1), b.detach().double().reshape(-1)
    a, b = a - a.mean(), b - b.mean()
    denom = a.norm() * b.norm()
    if denom == 0:
        raise ValueError("kernel_correlation of a constant kernel is undefined")
    return float((a @ b) / denom)


def kernel_relative_change(initial: Tensor, current: Tensor) -> float:
    """``||current - initial|| / ||initial||`` (Frobenius; figure 6.1a)."""
    return float((current.double() - initial.double()).norm() / initial.double().norm())


def parameter_norm(model: nn.Module) -> float:
    """Euclidean norm of all trainable parameters."""
    total = sum(p.detach().double().square().sum() for p in trainable_parameters(model).values())
    return float(torch.sqrt(cast(Tensor, total)))
