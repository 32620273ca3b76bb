"""Parameter regularisers any module can take (design decision 6): NormBias (thesis eq. 6.3).

A regulariser adds the gradient of its penalty to the parameters' ``.grad`` right before
the optimiser steps (Lightning's ``on_before_optimizer_step``), like an optimiser's
weight decay. So it works unchanged with natural, adversarial, distillation and free
(manual-optimisation) training, under DDP (gradients are already averaged; the penalty
of the replicated parameters is the same on every rank) and under mixed precision
(gradients are unscaled by then). The logged training loss stays the data loss; the
module logs ``train/regularizer`` and ``train/param_norm`` besides.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence, cast

import torch
from torch import Tensor

from ..validation import check_real

__all__ = ["Regularizer", "NormBias", "coerce_regularizer"]


class Regularizer:
    """Base class: implement :meth:`penalty`; :meth:`add_gradient_` differentiates it."""

    def penalty(self, params: Sequence[Tensor]) -> Tensor:
        raise NotImplementedError

    def init_args(self) -> dict[str, Any]:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """A primitive description (``class_path`` / ``init_args``) for hparams and checkpoints."""
        return {"class_path": f"{type(self).__module__}.{type(self).__name__}", "init_args": self.init_args()}

    def add_gradient_(self, params: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """Add ``d penalty / d params`` to ``p.grad``; returns (penalty, parameter norm) as 0-d tensors
        (no host sync: it runs every step)."""
        params = [p for p in params if p.requires_grad]
        with torch.enable_grad():
            leaves = [p.detach().requires_grad_(True) for p in params]
            value = self.penalty(leaves)
            grads = torch.autograd.grad(value, leaves)
        with torch.no_grad():
            for p, g in zip(params, grads):
                if p.grad is None:
                    p.grad = g.to(p.dtype)
                else:
                    p.grad.add_(g.to(p.grad.dtype))
            norm = (torch.stack([p.detach().double().square().sum() for p in params]).sum().sqrt() if params
                    else torch.zeros((), dtype=torch.float64))
        return value.detach(), norm


class NormBias(Regularizer):
    """``coef * | sum_i theta_i^2 - mu^2 |`` over all trainable parameters (thesis eq. 6.3).

    ``mu_squared=0`` is weight decay (with coefficient ``coef``, i.e. an optimiser weight
    decay of ``2 coef`` but non-differentiable at 0). The thesis: ResNet-18 / DenseNet-40
    ``mu^2 = 2500``, ``coef = 0.005``; MobileNetV2 ``5000`` / ``0.001``; ResNet-20 Fixup
    ``1000`` / ``0.0005`` (CIFAR-100: ResNet-18 ``8100`` / ``0.005``, DenseNet-40
    ``7500`` / ``0.001``, Fixup ``2000`` / ``0.0005``). Set the optimiser's
    ``weight_decay`` to 0 alongside.

    Args:
        coef: penalty coefficient, > 0.
        mu_squared: target squared norm ``mu^2``, >= 0.
    """

    def __init__(self, coef: float = 0.005, mu_squared: float = 2500.0) -> None:
        check_real("NormBias.coef", coef, positive=True, hint="the thesis uses 0.0005 to 0.005")
        check_real("NormBias.mu_squared", mu_squared, minimum=0.0, hint="the thesis uses 1000 to 8100")
        self.coef = float(coef)
        self.mu_squared = float(mu_squared)

    def penalty(self, params: Sequence[Tensor]) -> Tensor:
        sq = cast(Tensor, sum(p.square().sum() for p in params))
        return self.coef * (sq - self.mu_squared).abs()

    def init_args(self) -> dict[str, Any]:
        return {"coef": self.coef, "mu_squared": self.mu_squared}

    def __repr__(self) -> str:
        return f"NormBias(coef={self.coef}, mu_squared={self.mu_squared})"


_KNOWN = {"NormBias": NormBias}


def coerce_regularizer(value: Any) -> Optional[Regularizer]:
    """Accept a :class:`Regularizer`, None, or its ``to_dict()`` form (as stored in a checkpoint's hparams)."""
    if value is None or isinstance(value, Regularizer):
        return value
    if isinstance(value, dict) and "class_path" in value:
        name = str(value["class_path"]).rsplit(".", 1)[-1]
        if name not in _KNOWN:
            raise ValueError(f"regularizer class_path={value['class_path']!r} is not one of {sorted(_KNOWN)}")
        return _KNOWN[name](**dict(value.get("init_args") or {}))
    raise ValueError(f"regularizer must be a Regularizer (e.g. NormBias), its dict form or null, got {value!r}")
