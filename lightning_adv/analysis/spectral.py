"""Singular values of convolution and linear layers, rank projections, effective rank.

A stride-1 2-D convolution with circular padding over an ``n x n`` input is a block
doubly-circulant operator; the 2-D DFT block-diagonalises it (Sedghi, Gupta & Long,
"The singular values of convolutional layers", ICLR 2019). With ``K`` the kernel of shape
``(c_out, c_in, k, k)`` and ``K_hat[u, v] = sum_{a, b} K[:, :, a, b] e^{-2 pi i (ua + vb)/n}``
the ``(c_out x c_in)`` matrix at frequency ``(u, v)``, the singular values of the operator
are the union over the ``n^2`` frequencies of the singular values of ``K_hat[u, v]``: at
most ``n^2 min(c_in, c_out)`` of them, computed in ``O(n^2 c^3)`` instead of the
``O(n^6 c^3)`` of an SVD of the explicit ``(n^2 c_out) x (n^2 c_in)`` matrix.

Notes:

* PyTorch's ``conv2d`` is a cross-correlation with ``padding`` shifting the kernel: the
  operator differs from the convolution by a flip and a circular shift, i.e. by unitary
  factors, so the singular values are the same (the tests check against the explicit
  operator of ``F.conv2d`` with circular padding).
* Zero padding (what CIFAR nets use) is not circular; the circular operator is the usual,
  and the thesis', approximation. A strided convolution is a row-subsample of its stride-1
  operator; this module analyses the stride-1 operator of the same kernel.
* Projection (:func:`project_conv`): change the singular values frequency by frequency,
  go back with the inverse DFT and crop to the ``k x k`` support (Sedghi et al.'s
  ``Clip_OperatorNorm``). The crop makes the result approximate: the tests measure how
  far the cropped kernel lands from the target spectrum.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..validation import check_int

__all__ = [
    "conv_transfer_matrices",
    "conv_singular_values",
    "conv_operator_matrix",
    "linear_singular_values",
    "effective_rank",
    "project_singular_values",
    "project_conv",
    "project_linear",
    "RANK_MODES",
    "layer_input_sizes",
    "operator_layers",
    "layer_singular_values",
    "effective_ranks",
    "project_model_",
]

#: ``"min"``: zero the singular values below the threshold (RankMin); ``"max"``: clip them at
#: the threshold (RankMax).
RANK_MODES = ("min", "max")


def _check_conv_weight(weight: Tensor, n: int) -> None:
    if weight.dim() != 4:
        raise ValueError(f"a conv2d weight of shape (c_out, c_in, k, k) is needed, got shape {tuple(weight.shape)}")
    check_int("n", n, max(weight.shape[-2:]), f"the input size, at least the kernel size {tuple(weight.shape[-2:])}: "
              f"pass the spatial size of the layer's input", whole_floats=True)


def conv_transfer_matrices(weight: Tensor, n: int) -> Tensor:
    """The ``(n, n, c_out, c_in)`` complex matrices ``K_hat[u, v]`` of a conv kernel over ``n x n`` inputs."""
    _check_conv_weight(weight, n)
    return torch.fft.fft2(weight.detach(), s=(n, n)).permute(2, 3, 0, 1)


def conv_singular_values(weight: Tensor, n: int) -> Tensor:
    """All singular values (``n * n * min(c_in, c_out)``, unsorted) of a stride-1 circular conv over ``n x n``."""
    return torch.linalg.svdvals(conv_transfer_matrices(weight, n)).reshape(-1)


def conv_operator_matrix(weight: Tensor, n: int, padding: Optional[int] = None) -> Tensor:
    """The explicit ``(c_out n^2) x (c_in n^2)`` matrix of ``F.conv2d`` with circular padding.

    Built by applying the convolution to every basis image; a reference for tests and
    benchmarks (memory ``O(n^4 c^2)``), not for real layers.
    """
    _check_conv_weight(weight, n)
    c_out, c_in, kh, kw = weight.shape
    pad_h = (kh - 1) // 2 if padding is None else padding
    pad_w = (kw - 1) // 2 if padding is None else padding
    basis = torch.eye(c_in * n * n, dtype=weight.dtype, device=weight.device).reshape(-1, c_in, n, n)
    padded = F.pad(basis, (pad_w, kw - 1 - pad_w, pad_h, kh - 1 - pad_h), mode="circular")
    out = F.conv2d(padded, weight.detach())  # (c_in n^2, c_out, n, n): column j is the image of basis j
    return out.reshape(c_in * n * n, c_out * n * n).T


def linear_singular_values(weight: Tensor) -> Tensor:
    """Singular values of a linear layer's ``(out, in)`` weight."""
    if weight.dim() != 2:
        raise ValueError(f"a linear weight of shape (out, in) is needed, got shape {tuple(weight.shape)}")
    return torch.linalg.svdvals(weight.detach())


def effective_rank(singular_values: Tensor) -> float:
    """``r(W) = ||W||_* / ||W||_F`` from the singular values (1 for rank one, sqrt(d) for orthogonal d x d)."""
    s = singular_values.detach().abs().double()
    fro = s.square().sum().sqrt()
    if fro == 0:
        return 0.0
    return float(s.sum() / fro)


def project_singular_values(s: Tensor, mode: str, threshold: float, relative: bool = True) -> Tensor:
    """RankMin (``mode="min"``): zero ``s < t``; RankMax (``"max"``): ``min(s, t)``.

    ``t = threshold * s.max()`` when ``relative`` (``threshold`` in (0, 1]), else ``threshold``.
    ``s`` may carry leading batch dimensions; the maximum is taken over all of it (one
    operator).
    """
    if mode not in RANK_MODES:
        raise ValueError(f"mode={mode!r} is not one of {RANK_MODES} (min: RankMin, max: RankMax)")
    if not threshold > 0 or (relative and threshold > 1):
        raise ValueError(
            f"threshold={threshold} must be > 0" + (" and <= 1 (a fraction of the largest singular value)"
                                                      if relative else "")
        )
    t = threshold * s.max() if relative else torch.as_tensor(threshold, dtype=s.dtype, device=s.device)
    if mode == "min":
        return torch.where(s >= t, s, torch.zeros_like(s))
    return torch.minimum(s, t)


def project_conv(weight: Tensor, n: int, mode: str, threshold: float, relative: bool = True) -> Tensor:
    """The kernel (same shape) whose circular operator over ``n x n`` has the projected spectrum, cropped to k x k."""
    _check_conv_weight(weight, n)
    kh, kw = weight.shape[-2:]
    transfer = conv_transfer_matrices(weight, n)
    u, s, vh = torch.linalg.svd(transfer, full_matrices=False)
    s_new = project_singular_values(s, mode, threshold, relative)
    rebuilt = (u * s_new.unsqueeze(-2).to(u.dtype)) @ vh  # (n, n, c_out, c_in)
    kernel = torch.fft.ifft2(rebuilt.permute(2, 3, 0, 1), s=(n, n)).real
    return kernel[..., :kh, :kw].to(weight.dtype).contiguous()


def project_linear(weight: Tensor, mode: str, threshold: float, relative: bool = True) -> Tensor:
    """A linear weight with its singular values projected (exact: no crop)."""
    if weight.dim() != 2:
        raise ValueError(f"a linear weight of shape (out, in) is needed, got shape {tuple(weight.shape)}")
    u, s, vh = torch.linalg.svd(weight.detach(), full_matrices=False)
    return (u * project_singular_values(s, mode, threshold, relative)) @ vh


def layer_input_sizes(model: nn.Module, example: Tensor) -> dict[str, int]:
    """Spatial size of the input of every ``Conv2d`` of ``model`` on ``example`` (one forward, no grad)."""
    sizes: dict[str, int] = {}
    handles = []
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Conv2d):
            def hook(_m: nn.Module, args: tuple, _name: str = name) -> None:
                sizes.setdefault(_name, int(args[0].shape[-1]))
            handles.append(mod.register_forward_pre_hook(hook))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return sizes


def operator_layers(model: nn.Module) -> list[tuple[str, nn.Conv2d | nn.Linear]]:
    """The ``Conv2d`` (groups 1) and ``Linear`` layers of ``model`` with a trainable weight, in order."""
    return [
        (name, m) for name, m in model.named_modules()
        if ((isinstance(m, nn.Conv2d) and m.groups == 1) or isinstance(m, nn.Linear)) and m.weight.requires_grad
    ]


def layer_singular_values(module: nn.Module, n: Optional[int]) -> Tensor:
    """Singular values of a ``Linear`` layer or of a ``Conv2d`` over ``n x n`` inputs."""
    if isinstance(module, nn.Linear):
        return linear_singular_values(module.weight)
    if isinstance(module, nn.Conv2d):
        if n is None:
            raise ValueError("a Conv2d layer needs its input size n (see layer_input_sizes)")
        return conv_singular_values(module.weight, n)
    raise ValueError(f"expected an nn.Linear or nn.Conv2d, got {type(module).__name__}")


def effective_ranks(model: nn.Module, input_sizes: dict[str, int]) -> dict[str, float]:
    """Effective rank of every conv/linear operator of ``model`` (``input_sizes`` from :func:`layer_input_sizes`)."""
    return {name: effective_rank(layer_singular_values(m, input_sizes.get(name))) for name, m in operator_layers(model)}


@torch.no_grad()
def project_model_(model: nn.Module, input_sizes: dict[str, int], mode: str, threshold: float,
                   relative: bool = True, include_linear: bool = True) -> list[str]:
    """Replace every conv (and linear) operator of ``model`` by its projection, in place; returns the layer names."""
    done = []
    for name, m in operator_layers(model):
        if isinstance(m, nn.Conv2d):
            m.weight.copy_(project_conv(m.weight, input_sizes[name], mode, threshold, relative))
        elif include_linear:
            m.weight.copy_(project_linear(m.weight, mode, threshold, relative))
        else:
            continue
        done.append(name)
    return done
