"""Adversarial training of one classifier: the objective (PGD-AT, TRADES, MART, AWP, free AT) is a part."""
from __future__ import annotations

from typing import Any, Optional

from ..objectives import PGDAT, Objective
from .classifier import Classifier
from .objective_training import ObjectiveTraining, coerce_objective
from .compute import ComputeConfig
from .optim import OptimConfig
from .regularizers import Regularizer

__all__ = ["AdvTraining"]


# checker: ObjectiveTraining's objective and training_step replace Classifier's (the MRO's order)
class AdvTraining(ObjectiveTraining, Classifier):  # type: ignore[misc]
    """Adversarial training of a registered architecture.

    Args (besides :class:`Classifier`'s):
        objective: what a step minimises and its attack maximises
            (:mod:`lightning_adv.objectives`): ``PGDAT`` (Madry et al., default: the thesis'
            PGD-10 8/255 in train mode), ``TRADES``, ``MART``, ``AWP`` (around PGDAT or
            TRADES) or ``Free`` (m replays; divide ``max_epochs`` and ``optim.milestones``
            by m).
        track_clean_acc: log ``train/acc`` from an extra no-grad eval-mode forward when the
            objective computes no clean logits itself.
        step_logging: per-step ``self.log`` of the training scalars (:class:`Classifier`).

    Logged (besides :class:`Classifier`'s): ``train/adv_acc`` (accuracy on the training
    perturbations), ``train/acc`` and the objective's own terms (``train/trades_kl``, ...).
    """

    def __init__(
        self,
        arch: str = "small_cnn",
        num_classes: int = 10,
        in_channels: int = 3,
        mean: Optional[list[float]] = None,
        std: Optional[list[float]] = None,
        arch_kwargs: Optional[dict[str, Any]] = None,
        optim: OptimConfig = OptimConfig(),
        init_weights: Optional[str] = None,
        objective: Objective = PGDAT(),
        track_clean_acc: bool = True,
        regularizer: Optional[Regularizer] = None,
        compute: ComputeConfig = ComputeConfig(),
        step_logging: bool = False,
    ) -> None:
        objective = coerce_objective(objective, "classifier", teacher=False, module="AdvTraining")
        super().__init__(arch=arch, num_classes=num_classes, in_channels=in_channels, mean=mean, std=std,
                         arch_kwargs=arch_kwargs, optim=optim, init_weights=init_weights,
                         regularizer=regularizer, compute=compute, step_logging=step_logging)
        self._init_objective(objective, track_clean_acc)
