"""Certified training with certified accuracy in validation and test (lecture section 8.3.1).

The training objective is a part like every other (:class:`~lightning_adv.objectives.IBP`,
:class:`~lightning_adv.objectives.CROWNIBP`, or any classifier objective to compare against);
this module is :class:`AdvTraining` plus ``{val,test}/certified_acc``: the fraction of examples
whose certified margin lower bound at ``eval_eps`` (``eval_method``: 'ibp', 'crown-ibp' or the
full 'crown') is positive for every other class. The same numbers next to the attacks come from
the suite's certified rows (``configs/eval_certified.yaml``).
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor
from torchmetrics import MeanMetric

from ..attacks.threat import make_threat
from ..certify import CERTIFY_METHODS, BoundNetwork, certified, margin_lower_bound
from ..objectives import IBP, CertifiedObjective, Objective
from .adv_training import AdvTraining

__all__ = ["CertifiedTraining"]


class CertifiedTraining(AdvTraining):
    """:class:`AdvTraining` with a certified objective by default and certified accuracy logged.

    Args (besides :class:`AdvTraining`'s):
        in_channels: image channels (default 1: the MNIST of the certified-training papers).
        objective: default ``IBP()``; ``CROWNIBP(...)`` for CROWN-IBP.
        eval_eps: the radius of ``{val,test}/certified_acc`` (default: the objective's ``eps``;
            required when the objective is not a certified one).
        eval_method: the bound of that accuracy ('ibp', 'crown-ibp', 'crown').

    Logged: :class:`AdvTraining`'s, the objective's ``train/eps``, ``train/kappa``,
    ``train/robust_ce``, ``train/certified_acc`` (at the current eps), and
    ``val/certified_acc``, ``test/certified_acc`` (at ``eval_eps``).
    """

    def __init__(
        self,
        in_channels: int = 1,
        objective: Objective = IBP(),
        eval_eps: Optional[float] = None,
        eval_method: str = "ibp",
        **kwargs: Any,
    ) -> None:
        if eval_method not in CERTIFY_METHODS:
            raise ValueError(f"eval_method={eval_method!r} is not one of {CERTIFY_METHODS}")
        objective = Objective.coerce(objective)
        if eval_eps is None:
            if not isinstance(objective, CertifiedObjective):
                raise ValueError(f"eval_eps is needed with objective {type(objective).__name__} (it has no certified "
                                 f"radius); e.g. eval_eps: 0.1")
            eval_eps = objective.eps
        make_threat("linf", eval_eps)  # a finite radius in [0, 1], named in the error
        super().__init__(in_channels=in_channels, objective=objective, **kwargs)
        self.eval_eps, self.eval_method = float(eval_eps), eval_method
        self.net = BoundNetwork(self.model)  # unsupported layers fail here, before training
        self.val_certified = MeanMetric()
        self.test_certified = MeanMetric()

    def schedule(self, step: int) -> tuple[float, float, float]:
        """``(eps, kappa, beta)`` of a certified objective at optimiser step ``step``."""
        if not isinstance(self.objective, CertifiedObjective):
            raise ValueError(f"objective {type(self.objective).__name__} has no certified-training schedule")
        return self.objective.schedule(step)

    def _shared_eval_step(self, batch: Any, stage: str) -> Tensor:
        loss = super()._shared_eval_step(batch, stage)
        x, y = batch
        with torch.no_grad():
            ok = certified(margin_lower_bound(self.net, x, y, self.eval_eps, self.eval_method), y)
        metric = self.val_certified if stage == "val" else self.test_certified
        metric.update(ok.float())
        self.log(f"{stage}/certified_acc", metric, on_step=False, on_epoch=True, prog_bar=True)
        return loss
