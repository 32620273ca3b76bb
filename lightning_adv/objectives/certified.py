"""Certified training objectives: IBP (Gowal et al. 2018) and CROWN-IBP (Zhang et al. 2020).

The loss ``kappa * CE(z(x), y) + (1 - kappa) * CE(-m(x, eps), y)`` (``m``: certified lower bounds
of the margins ``z_y - z_j`` over the Linf ball) and the schedules are the pure functions of
:mod:`lightning_adv.certify.training`; an objective only schedules them by the module's
optimiser step: eps is 0 for ``warmup_steps``, then ramps linearly to ``eps`` over
``ramp_steps``; kappa ramps from ``kappa_start`` to ``kappa_end`` over the same steps (Gowal et
al.: 1 -> 0.5), CROWN-IBP's beta from ``beta_start`` to ``beta_end`` (Zhang et al.: 1 -> 0).

Any classifier module takes them (``AdvTraining(objective=IBP(...))``);
:class:`~lightning_adv.modules.CertifiedTraining` adds certified accuracy to validation and test.
"""
from __future__ import annotations


import torch
from torch import Tensor

from ..attacks.threat import make_threat
from ..certify import BoundNetwork, certified, certified_loss, ramp
from ..validation import check_int, check_real
from .base import Objective, StepOutput
from .protocols import ClassifierModule

__all__ = ["CertifiedObjective", "IBP", "CROWNIBP"]


class CertifiedObjective(Objective[ClassifierModule]):
    """Shared by :class:`IBP` and :class:`CROWNIBP`: the eps and kappa schedules, the bound network."""

    method = "ibp"

    def __init__(self, eps: float = 0.1, warmup_steps: int = 0, ramp_steps: int = 1000, kappa_start: float = 1.0,
                 kappa_end: float = 0.5) -> None:
        make_threat("linf", eps)  # a finite eps in [0, 1], named in the error
        if not eps > 0:
            raise ValueError(f"eps={eps!r}: certified training needs a radius > 0 (Linf, [0, 1] pixel units)")
        self.eps = float(eps)
        self.warmup_steps = check_int("warmup_steps", warmup_steps, 0, "optimiser steps")
        self.ramp_steps = check_int("ramp_steps", ramp_steps, 0, "optimiser steps")
        self.kappa_start = check_real("kappa_start", kappa_start, minimum=0.0, maximum=1.0)
        self.kappa_end = check_real("kappa_end", kappa_end, minimum=0.0, maximum=1.0)
        self._nets: dict[int, BoundNetwork] = {}

    def _beta(self, step: int) -> float:
        return 0.0

    def schedule(self, step: int) -> tuple[float, float, float]:
        """``(eps, kappa, beta)`` at optimiser step ``step``."""
        args = (step, self.warmup_steps, self.ramp_steps)
        return ramp(*args, 0.0, self.eps), ramp(*args, self.kappa_start, self.kappa_end), self._beta(step)

    def network(self, model: torch.nn.Module) -> BoundNetwork:
        """The bound network of ``model`` (built once; unsupported layers raise, naming the layer)."""
        key = id(model)
        if key not in self._nets:
            self._nets = {key: BoundNetwork(model)}
        return self._nets[key]

    def check_module(self, module: ClassifierModule) -> None:
        self.network(module.model)  # before any training: the bounds support every layer

    def step(self, module: ClassifierModule, *batch: Tensor) -> StepOutput:
        x, y = batch
        eps, kappa, beta = self.schedule(int(module.global_step))
        logits = module.model(x)
        loss, robust, margin = certified_loss(self.network(module.model), x, y, logits, eps, kappa, self.method, beta)
        logs = {"robust_ce": robust.detach(), "certified_acc": certified(margin.detach(), y).float().mean(),
                "eps": torch.tensor(eps), "kappa": torch.tensor(kappa)}
        return StepOutput(loss, clean_logits=logits, logs=logs)


class IBP(CertifiedObjective):
    """Interval bound propagation training (Gowal et al. 2018)."""

    method = "ibp"


class CROWNIBP(CertifiedObjective):
    """CROWN-IBP training (Zhang et al. 2020): the bound is ``beta * CROWN-IBP + (1 - beta) * IBP``."""

    method = "crown-ibp"

    def __init__(self, eps: float = 0.1, warmup_steps: int = 0, ramp_steps: int = 1000, kappa_start: float = 1.0,
                 kappa_end: float = 0.5, beta_start: float = 1.0, beta_end: float = 0.0) -> None:
        super().__init__(eps, warmup_steps, ramp_steps, kappa_start, kappa_end)
        self.beta_start, self.beta_end = (check_real("beta_start", beta_start, minimum=0.0, maximum=1.0),
                                          check_real("beta_end", beta_end, minimum=0.0, maximum=1.0))

    def _beta(self, step: int) -> float:
        return ramp(step, self.warmup_steps, self.ramp_steps, self.beta_start, self.beta_end)
