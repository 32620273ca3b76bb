"""Adversarial training of one classifier: the objective (PGD-AT, TRADES, MART, AWP, free AT) is a part."""
from __future__ import annotations

from typing import Any

from ..objectives import PGDAT, Objective
from .classifier import BaseClassifier
from .objective_training import ObjectiveTraining, check_base_arguments, coerce_objective

__all__ = ["AdvTraining"]


class AdvTraining(ObjectiveTraining, BaseClassifier):
    """Adversarial training of a registered architecture.

    Args (besides :class:`~lightning_adv.modules.classifier.BaseClassifier`'s):
        objective: what a step minimises and its attack maximises
            (:mod:`lightning_adv.objectives`): ``PGDAT`` (Madry et al., default: the thesis'
            PGD-10 8/255 in train mode), ``TRADES``, ``MART``, ``AWP`` (around PGDAT or
            TRADES) or ``Free`` (m replays; divide ``max_epochs`` and ``optim.milestones``
            by m).
        track_clean_acc: log ``train/acc`` from an extra no-grad eval-mode forward when the
            objective computes no clean logits itself.

    Logged (besides :class:`BaseClassifier`'s): ``train/adv_acc`` (accuracy on the training
    perturbations), ``train/acc`` and the objective's own terms (``train/trades_kl``, ...).
    """

    def __init__(self, objective: Objective = PGDAT(), track_clean_acc: bool = True, **kwargs: Any) -> None:
        objective = coerce_objective(objective, "classifier", teacher=False, module="AdvTraining")
        check_base_arguments(kwargs, type(self).__name__)
        super().__init__(**kwargs)
        self._init_objective(objective, track_clean_acc)
