"""Certified training: IBP (Gowal et al. 2018) and CROWN-IBP (Zhang et al. 2020).

The loss and the schedules are pure functions of :mod:`lightning_adv.certify.training`; this
module only schedules them by ``global_step`` and logs. When the project's objectives become
classes (issue 11), the loss moves into one and this module becomes a config.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor
from torchmetrics import MeanMetric

from ..attacks.threat import make_threat
from ..certify import CERTIFY_METHODS, TRAINING_METHODS, BoundNetwork, certified, certified_loss, \
    margin_lower_bound, ramp
from .classifier import Classifier
from .optim import OptimConfig
from .regularizers import Regularizer

__all__ = ["CertifiedTraining"]


def _check_int(name: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError(f"{name} must be an integer >= 0 (optimiser steps), got {name}={v!r}")
    return v


def _check_unit(name: str, v: float) -> float:
    if not 0 <= v <= 1:
        raise ValueError(f"{name} must be in [0, 1], got {name}={v}")
    return float(v)


class CertifiedTraining(Classifier):
    """Train so that the prediction provably holds on the Linf ball (lecture section 8.3.1).

    Loss: ``kappa * CE(z(x), y) + (1 - kappa) * CE(-m, y)``, ``m`` the certified lower bounds
    of the margins ``z_y - z_j`` at the current eps (``method='ibp'``: IBP; ``'crown-ibp'``:
    ``beta * CROWN-IBP + (1 - beta) * IBP``). Schedules, by optimiser step: eps is 0 for
    ``warmup_steps``, then ramps linearly to ``eps`` over ``ramp_steps``; kappa ramps from
    ``kappa_start`` to ``kappa_end`` and beta from ``beta_start`` to ``beta_end`` over the
    same steps (Gowal et al.: kappa 1 -> 0.5; Zhang et al.: beta 1 -> 0).

    Args (besides :class:`Classifier`'s):
        method: 'ibp' or 'crown-ibp'.
        eps: final training radius (Linf, [0, 1] pixel units; Gowal et al. train at 1.1x the
            test eps on MNIST).
        warmup_steps, ramp_steps: the eps schedule in optimiser steps.
        kappa_start, kappa_end, beta_start, beta_end: the weights' schedules (in [0, 1]).
        eval_eps: the radius of the certified accuracy logged in validation/test (default ``eps``).
        eval_method: the bound of that accuracy ('ibp', 'crown-ibp', 'crown').

    Logged: ``train/eps``, ``train/kappa``, ``train/robust_ce``, ``train/certified_acc`` (at the
    current eps), ``val/certified_acc`` and ``test/certified_acc`` (at ``eval_eps``).
    """

    def __init__(
        self,
        arch: str = "small_cnn",
        num_classes: int = 10,
        in_channels: int = 1,
        mean: Optional[list[float]] = None,
        std: Optional[list[float]] = None,
        arch_kwargs: Optional[dict[str, Any]] = None,
        optim: OptimConfig = OptimConfig(),
        init_weights: Optional[str] = None,
        regularizer: Optional[Regularizer] = None,
        method: str = "ibp",
        eps: float = 0.1,
        warmup_steps: int = 0,
        ramp_steps: int = 1000,
        kappa_start: float = 1.0,
        kappa_end: float = 0.5,
        beta_start: float = 1.0,
        beta_end: float = 0.0,
        eval_eps: Optional[float] = None,
        eval_method: str = "ibp",
    ) -> None:
        if method not in TRAINING_METHODS:
            raise ValueError(f"method={method!r} is not one of {TRAINING_METHODS}")
        if eval_method not in CERTIFY_METHODS:
            raise ValueError(f"eval_method={eval_method!r} is not one of {CERTIFY_METHODS}")
        for name, value in (("eps", eps), ("eval_eps", eval_eps)):
            if value is not None and not value >= 0:
                raise ValueError(f"{name} must be >= 0 (Linf radius in [0, 1] pixel units), got {name}={value}")
        make_threat("linf", eps)
        self.warmup_steps, self.ramp_steps = _check_int("warmup_steps", warmup_steps), _check_int("ramp_steps",
                                                                                                  ramp_steps)
        self.kappa = (_check_unit("kappa_start", kappa_start), _check_unit("kappa_end", kappa_end))
        self.beta = (_check_unit("beta_start", beta_start), _check_unit("beta_end", beta_end))
        super().__init__(arch=arch, num_classes=num_classes, in_channels=in_channels, mean=mean, std=std,
                         arch_kwargs=arch_kwargs, optim=optim, init_weights=init_weights, regularizer=regularizer)
        self.method, self.eps, self.eval_method = method, float(eps), eval_method
        self.eval_eps = float(eps if eval_eps is None else eval_eps)
        self.net = BoundNetwork(self.model)  # unsupported layers fail here, before training
        self.val_certified = MeanMetric()
        self.test_certified = MeanMetric()

    def schedule(self, step: int) -> tuple[float, float, float]:
        """``(eps, kappa, beta)`` at optimiser step ``step``."""
        args = (step, self.warmup_steps, self.ramp_steps)
        return ramp(*args, 0.0, self.eps), ramp(*args, *self.kappa), ramp(*args, *self.beta)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y = batch
        eps, kappa, beta = self.schedule(self.global_step)
        logits = self.model(x)
        loss, robust, margin = certified_loss(self.net, x, y, logits, eps, kappa, self.method, beta)
        self.log("train/loss", loss.detach(), on_step=True, on_epoch=True)
        self.log("train/robust_ce", robust.detach(), on_step=False, on_epoch=True)
        self.log("train/certified_acc", certified(margin.detach(), y).float().mean(), on_step=False, on_epoch=True)
        self.log("train/eps", eps, on_step=True, on_epoch=False)
        self.log("train/kappa", kappa, on_step=True, on_epoch=False)
        self._log_clean_acc(logits, y)
        return loss

    def _shared_eval_step(self, batch: Any, stage: str) -> Tensor:
        loss = super()._shared_eval_step(batch, stage)
        x, y = batch
        with torch.no_grad():
            ok = certified(margin_lower_bound(self.net, x, y, self.eval_eps, self.eval_method), y)
        metric = self.val_certified if stage == "val" else self.test_certified
        metric.update(ok.float())
        self.log(f"{stage}/certified_acc", metric, on_step=False, on_epoch=True, prog_bar=True)
        return loss
