"""Certified training losses and schedules, as pure functions (a LightningModule or a later
objective class wraps them).

IBP training (Gowal et al. 2018): ``kappa * CE(z(x), y) + (1 - kappa) * CE(-m(x, eps), y)`` where
``m_j`` is the certified lower bound of ``z_y - z_j`` (``m_y = 0``): ``-m`` are the worst-case
logits the bound admits, and the robust cross-entropy upper-bounds the cross-entropy of every
point in the ball (Wong and Kolter 2018). ``eps`` is 0 during a warm-up, then ramps linearly
to its final value; ``kappa`` ramps from 1 to its final value (0.5 in Gowal et al.) over the
same steps.

CROWN-IBP (Zhang et al. 2020): the bound is ``beta * m_CROWN-IBP + (1 - beta) * m_IBP``, with
``beta`` ramping from 1 to 0 over the eps ramp (the CROWN-IBP term stabilises the start of
training, the cheap IBP term takes over).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from .crown import crown_margin
from .ibp import ibp_margin
from .network import BoundNetwork

__all__ = ["TRAINING_METHODS", "ramp", "robust_cross_entropy", "certified_margin", "certified_loss"]

TRAINING_METHODS = ("ibp", "crown-ibp")


def ramp(step: int, warmup: int, length: int, start: float, end: float) -> float:
    """``start`` for ``step < warmup``, then linear to ``end`` over ``length`` steps, then ``end``."""
    if step < warmup:
        return float(start)
    if length <= 0:
        return float(end)
    t = min(1.0, (step - warmup) / length)
    return float(start + t * (end - start))


def robust_cross_entropy(margin_lb: Tensor, y: Tensor) -> Tensor:
    """Cross-entropy of the worst-case logits ``-margin_lb`` (column y of the margins is 0)."""
    return F.cross_entropy(-margin_lb, y)


def certified_margin(net: BoundNetwork, x: Tensor, y: Tensor, eps: float, method: str = "ibp",
                     beta: float = 0.0) -> Tensor:
    """Lower bounds of the margins used for training: IBP, or CROWN-IBP mixed with IBP by ``beta``."""
    if method not in TRAINING_METHODS:
        raise ValueError(f"certified training method={method!r} is not one of {TRAINING_METHODS}")
    if not 0 <= beta <= 1:
        raise ValueError(f"beta must be in [0, 1], got beta={beta}")
    m = ibp_margin(net, x, y, eps)
    if method == "crown-ibp" and beta > 0:
        m = beta * crown_margin(net, x, y, eps, intermediate="ibp") + (1 - beta) * m
    return m


def certified_loss(net: BoundNetwork, x: Tensor, y: Tensor, logits: Tensor, eps: float, kappa: float,
                   method: str = "ibp", beta: float = 0.0) -> tuple[Tensor, Tensor, Tensor]:
    """``(loss, robust_ce, margin_lb)``: the certified training loss of one batch (see the module doc).

    ``logits`` are the model's on the clean ``x``; at ``eps == 0`` the robust term is the clean
    cross-entropy (the bound is exact) and is computed from ``logits``, skipping the bounds.
    """
    if not 0 <= kappa <= 1:
        raise ValueError(f"kappa must be in [0, 1], got kappa={kappa}")
    clean = F.cross_entropy(logits, y)
    if eps == 0 or kappa == 1:
        return clean, clean.detach(), (logits.gather(1, y[:, None]) - logits).detach()
    margin = certified_margin(net, x, y, eps, method, beta)
    robust = robust_cross_entropy(margin, y)
    return kappa * clean + (1 - kappa) * robust, robust, margin
