"""Adversarial weight perturbation (Wu et al. 2020, AWP) on top of PGD-AT or TRADES.

Each step: the inner objective's adversarial inputs ``x'``; then a weight perturbation
``v`` that ascends the inner loss, per layer (every conv / linear weight, the tensors of
dimension > 1)::

    v_l = gamma * ||w_l|| * g_l / ||g_l||,   g_l = d loss(w; x, x', y) / d w_l

(the official code takes one SGD step of a proxy copy on ``-loss`` and rescales the
difference to ``||w_l||``, which is this direction; the gradient is taken in train mode
with the BatchNorm statistics restored afterwards, as the proxy's are discarded). The
model trains at ``w + v`` and, after the optimiser step, ``v`` is subtracted again:
``w <- w - lr * grad(w + v)``. Official settings: ``gamma = 0.01`` for PGD-AT, ``0.005``
for TRADES, no warm-up.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor, nn

from .adversarial import PGDAT, TRADES, PerturbationObjective
from ..validation import check_int, check_real
from .base import Objective, StepOutput
from .protocols import ClassifierModule

__all__ = ["AWP", "awp_perturbation"]


def _perturbed_params(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad and p.dim() > 1 and "weight" in n]


def awp_perturbation(model: nn.Module, loss_fn: Any, gamma: float) -> dict[str, Tensor]:
    """``{name: v_l}`` for the loss ``loss_fn()`` (computed here, in train mode, BN buffers kept)."""
    params = _perturbed_params(model)
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
    try:
        with torch.enable_grad():
            grads = torch.autograd.grad(loss_fn(), [p for _, p in params], allow_unused=True)
    finally:
        with torch.no_grad():
            for n, b in model.named_buffers():
                b.copy_(buffers[n])
    out = {}
    for (n, p), g in zip(params, grads):
        if g is None:
            continue
        out[n] = gamma * p.detach().norm() * g / (g.norm() + 1e-20)
    return out


def _add(model: nn.Module, diff: dict[str, Tensor], sign: float) -> None:
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n in diff:
                p.add_(diff[n], alpha=sign)


class AWP(Objective[ClassifierModule]):
    """AWP around ``inner`` (a :class:`PGDAT` or :class:`TRADES` objective).

    Args:
        inner: the input-space objective (its attack and its loss).
        gamma: relative size of the weight perturbation (official: 0.01 AT, 0.005 TRADES).
        warmup_epochs: epochs trained with ``inner`` alone before AWP starts (official: 0).
    """

    def __init__(self, inner: Objective = PGDAT(), gamma: float = 0.01, warmup_epochs: int = 0) -> None:
        inner = Objective.coerce(inner, "objective.inner")
        if not isinstance(inner, (PGDAT, TRADES)):
            raise ValueError(f"AWP.inner must be a PGDAT or TRADES objective, got {type(inner).__name__}")
        self.inner: PerturbationObjective = inner
        self.gamma = check_real("gamma", gamma, positive=True)
        self.warmup_epochs = check_int("warmup_epochs", warmup_epochs, 0, whole_floats=True)
        self._applied: Optional[dict[str, Tensor]] = None

    @property
    def attack(self) -> Any:
        return self.inner.attack

    def step(self, module: ClassifierModule, *batch: Tensor) -> StepOutput:
        x, y = batch
        x_adv = self.inner.perturb(module, x, y)
        if module.current_epoch >= self.warmup_epochs:  # 0 outside a Trainer
            self.after_batch(module)  # never stack two perturbations
            diff = awp_perturbation(module.model, lambda: self.inner.loss_at(module, x, x_adv, y).loss, self.gamma)
            _add(module.model, diff, 1.0)
            self._applied = diff
        return self.inner.loss_at(module, x, x_adv, y)

    def after_batch(self, module: ClassifierModule) -> None:
        """Take the weight perturbation off again (after the optimiser step)."""
        if self._applied is not None:
            _add(module.model, self._applied, -1.0)
            self._applied = None
