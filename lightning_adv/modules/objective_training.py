"""How a classifier module runs its training objective (AdvTraining, KnowledgeDistillation).

:class:`ObjectiveTraining` sits in front of :class:`RobustTrainingMixin` and a
:class:`~lightning_adv.modules.classifier.BaseClassifier`: ``training_step`` hands the batch to
``objective.step(self, x, y)`` or, for a :class:`~lightning_adv.objectives.FreeObjective`,
to the m-replay loop, and logs what comes back. Nothing here knows which objective runs.
"""
from __future__ import annotations

import inspect
from typing import Any, Optional

from torch import Tensor

from ..objectives import FreeObjective, Objective
from .classifier import BaseClassifier
from .robust import RobustTrainingMixin

__all__ = ["ObjectiveTraining", "check_base_arguments", "coerce_objective", "legacy_checkpoint_error"]

def legacy_checkpoint_error(hparams: Any, cls_name: str) -> Optional[str]:
    """The one-line error for a checkpoint written before objectives were parts (None if it is new): every
    checkpoint of a module that trains an objective stores ``objective`` in its hyperparameters."""
    hp = hparams if isinstance(hparams, dict) else {}
    if "objective" in hp or not any(not str(k).startswith("_") for k in hp):
        return None
    return (f"this {cls_name} checkpoint predates training objectives as parts (its hyperparameters have no "
            f"`objective`); convert it with `python scripts/convert_checkpoint.py OLD.ckpt NEW.ckpt` and load NEW.ckpt")


def check_base_arguments(kwargs: dict[str, Any], cls_name: str) -> None:
    """The arguments a module passes on to :class:`BaseClassifier` are its arguments; others are refused in one
    line (``load_from_checkpoint`` hands a module all of a checkpoint's hyperparameters, old ones included)."""
    accepted = [p for p in inspect.signature(BaseClassifier.__init__).parameters if p != "self"]
    unknown = sorted(k for k in kwargs if k not in accepted)
    if unknown:
        raise ValueError(f"{cls_name} takes no argument(s) {unknown} (besides its own it takes {accepted}); from a "
                         f"checkpoint written before training objectives were parts, convert it with "
                         f"`python scripts/convert_checkpoint.py OLD.ckpt NEW.ckpt` and load NEW.ckpt")


def coerce_objective(objective: Any, kind: str, teacher: bool, module: str) -> Objective:
    """The objective, checked against what ``module`` trains (``kind``) and whether it has a teacher."""
    objective = Objective.coerce(objective)
    if objective.kind != kind:
        raise ValueError(f"objective {type(objective).__name__} trains a {objective.kind} model; {module} takes "
                         f"{kind} objectives (docs/objectives.md lists them)")
    if objective.needs_teacher and not teacher:
        raise ValueError(f"objective {type(objective).__name__} distils a teacher; use "
                         f"lightning_adv.modules.KnowledgeDistillation (teacher_arch, teacher_checkpoint)")
    if teacher and not objective.needs_teacher:
        raise ValueError(f"objective {type(objective).__name__} uses no teacher; train it with "
                         f"lightning_adv.modules.AdvTraining")
    return objective


class ObjectiveTraining(RobustTrainingMixin):
    """``training_step`` = the objective's step (or its replay loop) + logging."""

    objective: Objective
    #: read by the training attacks (``objectives.base.check_batch``): False inside a step after the first batch
    check_attack_inputs: bool = True

    def _init_objective(self: Any, objective: Objective, track_clean_acc: bool = True) -> None:
        self.objective = objective
        self.hparams["objective"] = objective.config()
        self._init_robust(track_clean_acc)
        if isinstance(objective, FreeObjective):
            self._init_free(objective)
        objective.check_module(self)  # e.g. certified objectives: every layer has bounds, before training

    def soft_label_refusal(self: Any) -> Optional[str]:
        """None when the objective trains on soft labels (``Objective.soft_labels``), else why not."""
        return self.objective.soft_label_refusal()

    def training_step(self: Any, batch: Any, batch_idx: int) -> Optional[Tensor]:
        x, y = batch
        self._batch_size = x.shape[0]
        obj = self.objective
        if isinstance(obj, FreeObjective):
            ctx = obj.prepare(self, x, y)
            ascent = (lambda x_in: obj.ascent_loss(self, x_in, y, ctx)) if obj.separate_ascent else None
            self._free_step(x, y, lambda x_in: obj.replay_loss(self, x_in, x, y, ctx), ascent)
            return None
        self.check_attack_inputs = batch_idx == 0  # the [0, 1] check of the attack: once per epoch
        try:
            out = obj.step(self, x, y)
        finally:
            self.check_attack_inputs = True
        for name, value in out.logs.items():
            self._log_epoch_mean(f"train/{name}", value)
        if out.clean_logits is not None:
            self._log_clean_acc(out.clean_logits, y)
        else:
            self._eval_clean_acc(x, y)
        if out.adv_logits is not None:
            self._log_adv_step(out.loss, out.adv_logits, y)
        else:
            self._log_train_loss(out.loss)
        return out.loss

    def optimizer_step(self: Any, *args: Any, **kwargs: Any) -> None:
        """The optimiser step, then the objective's ``after_batch`` (AWP takes its weight perturbation off):
        inside the training loop's step, so no callback (a step checkpoint, a weight average) sees it."""
        # checker: a mixin: the next class in the MRO is the LightningModule
        super().optimizer_step(*args, **kwargs)  # type: ignore[misc]
        self.objective.after_batch(self)

    def on_train_batch_end(self: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.objective.after_batch(self)  # a batch without optimiser step (gradient accumulation)
        # checker: a mixin: the next class in the MRO is the LightningModule
        super().on_train_batch_end(outputs, batch, batch_idx)  # type: ignore[misc]

    def on_load_checkpoint(self: Any, checkpoint: dict) -> None:
        msg = legacy_checkpoint_error(checkpoint.get("hyper_parameters"), type(self).__name__)
        if msg:
            raise ValueError(msg)
        super().on_load_checkpoint(checkpoint)
