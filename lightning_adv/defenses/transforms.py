"""Simple pre-processing defenses: the textbook cases of gradient masking.

* :class:`Quantize` (bit-depth reduction, Xu et al. 2018 "feature squeezing"): rounds every
  pixel to one of ``levels`` values. Its gradient is zero almost everywhere, so gradient
  attacks see nothing; BPDA with the identity breaks it.
* :class:`GaussianNoise` (a randomised defense): adds ``N(0, sigma^2)`` noise at every forward,
  in training and evaluation alike (``always=True``). Single-sample gradients are noisy; EOT
  averages the noise out.
"""
from __future__ import annotations


import torch
from torch import Tensor, nn

from ..validation import check_int, check_real

__all__ = ["Quantize", "GaussianNoise"]


class Quantize(nn.Module):
    """Round pixels in [0, 1] to ``levels`` equally spaced values (``levels=2``: binarise)."""

    def __init__(self, levels: int = 8) -> None:
        super().__init__()
        self.levels = check_int("Quantize.levels", levels, 2, whole_floats=True)

    def forward(self, x: Tensor) -> Tensor:
        k = self.levels - 1
        return torch.round(x.clamp(0.0, 1.0) * k) / k

    def extra_repr(self) -> str:
        return f"levels={self.levels}"


class GaussianNoise(nn.Module):
    """``clamp(x + N(0, sigma^2), 0, 1)`` at every forward (a randomised model)."""

    def __init__(self, sigma: float = 0.1, clamp: bool = True) -> None:
        super().__init__()
        self.sigma = check_real("GaussianNoise.sigma", sigma, positive=True)
        self.clamp = bool(clamp)

    def forward(self, x: Tensor) -> Tensor:
        out = x + self.sigma * torch.randn_like(x)
        return out.clamp(0.0, 1.0) if self.clamp else out

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}"

