"""Threat models: where a perturbation may live and how PGD moves inside it.

A threat model is a small object with three operations (the factoring of
MadryLab/robustness): ``random_init`` draws a start inside the ball, ``step`` takes one
ascent step from a gradient, ``project`` maps back onto the ball. Every image is in
pixel space [0, 1], so ``eps = 8/255`` means what the thesis means.

:func:`clamp_to_image` keeps ``x + delta`` inside [0, 1]. Applied after ``project`` it
never leaves the ball (it only shrinks coordinates towards zero), so the pair keeps both
constraints at once.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor

from ..validation import check_radius

__all__ = ["ThreatModel", "LinfThreat", "L2Threat", "make_threat", "clamp_to_image", "THREAT_MODELS"]


def _flat_norm(t: Tensor, p: float) -> Tensor:
    """Per-example norm of a batch, shaped (B, 1, 1, ...) for broadcasting."""
    n = t.flatten(1).norm(p=p, dim=1)
    return n.view(-1, *([1] * (t.dim() - 1)))


def clamp_to_image(x: Tensor, delta: Tensor) -> Tensor:
    """Return the delta such that ``x + delta`` is clamped to [0, 1]."""
    return (x + delta).clamp_(0.0, 1.0) - x


class ThreatModel(ABC):
    """An l_p ball of radius ``eps`` around the clean input, in [0, 1] pixel space."""

    name: str = ""
    p: float = math.inf

    def __init__(self, eps: float) -> None:
        self.eps = check_radius(self.name, eps)

    @abstractmethod
    def random_init(self, x: Tensor) -> Tensor:
        """A perturbation drawn uniformly from the ball (same shape as ``x``)."""

    @abstractmethod
    def step(self, delta: Tensor, grad: Tensor, step_size: float) -> Tensor:
        """One steepest-ascent step of size ``step_size`` in this norm."""

    @abstractmethod
    def project(self, delta: Tensor) -> Tensor:
        """Euclidean projection onto the ball."""

    def norm(self, delta: Tensor) -> Tensor:
        """Per-example norm of ``delta`` in this threat model, shape (B,)."""
        return delta.flatten(1).norm(p=self.p, dim=1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(eps={self.eps:.6g})"


class LinfThreat(ThreatModel):
    """``||delta||_inf <= eps``: sign steps, coordinate-wise clipping."""

    name = "linf"
    p = math.inf

    def random_init(self, x: Tensor) -> Tensor:
        return torch.empty_like(x).uniform_(-self.eps, self.eps)

    def step(self, delta: Tensor, grad: Tensor, step_size: float) -> Tensor:
        return delta + step_size * grad.sign()

    def project(self, delta: Tensor) -> Tensor:
        return delta.clamp(-self.eps, self.eps)


class L2Threat(ThreatModel):
    """``||delta||_2 <= eps`` per example: normalised-gradient steps, radial projection."""

    name = "l2"
    p = 2.0

    def random_init(self, x: Tensor) -> Tensor:
        # Uniform in the ball: Gaussian direction, radius eps * U^(1/d).
        d = x[0].numel()
        direction = torch.randn_like(x)
        direction = direction / _flat_norm(direction, 2).clamp_min(1e-12)
        radius = torch.rand(x.shape[0], device=x.device, dtype=x.dtype).pow(1.0 / d) * self.eps
        return direction * radius.view(-1, *([1] * (x.dim() - 1)))

    def step(self, delta: Tensor, grad: Tensor, step_size: float) -> Tensor:
        return delta + step_size * grad / _flat_norm(grad, 2).clamp_min(1e-12)

    def project(self, delta: Tensor) -> Tensor:
        n = _flat_norm(delta, 2)
        factor = torch.where(n > self.eps, self.eps / n.clamp_min(1e-12), torch.ones_like(n))
        return delta * factor


THREAT_MODELS = {"linf": LinfThreat, "l2": L2Threat}


def make_threat(norm: str, eps: float) -> ThreatModel:
    """Build a threat model by name ('linf' or 'l2')."""
    key = str(norm).lower().replace("_", "").replace("-", "")
    key = {"inf": "linf", "l_inf": "linf", "2": "l2"}.get(key, key)
    if key not in THREAT_MODELS:
        raise ValueError(f"unknown norm={norm!r} for the threat model; use one of {sorted(THREAT_MODELS)}")
    return THREAT_MODELS[key](eps)
