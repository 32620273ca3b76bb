"""What every module that trains on perturbed inputs shares (AdvTraining, ARD, Fast-ARD).

:class:`RobustTrainingMixin` sits in front of :class:`~lightning_adv.modules.classifier.BaseClassifier`
(or a subclass) in the bases of a module and adds:

* logging of one training step on perturbed inputs: ``train/loss``, ``train/adv_acc``
  (accuracy on the training perturbations) and ``train/acc`` (clean accuracy, from logits
  at hand or from an extra no-grad eval-mode forward);
* the plumbing of free training (m replays of each batch, :class:`FreeReplay`): manual
  optimisation, the LR schedule stepped once per epoch, the persistent perturbation saved
  in and restored from checkpoints (key ``free_delta``, one slice per DDP rank).
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor
from torchmetrics.classification import MulticlassAccuracy

from ..attacks import module_mode
from ..objectives import FreeObjective
from .free import AscentClosure, FreeReplay, LossClosure

__all__ = ["RobustTrainingMixin"]


class RobustTrainingMixin:
    """Training-step logging and free-training plumbing for adversarial modules.

    Expects the host to be a :class:`BaseClassifier` (``self.model``, ``self.train_acc``,
    ``self.num_classes``, ``self._log_clean_acc``). Call :meth:`_init_robust` in the
    constructor, and :meth:`_init_free` to switch to free training.
    """

    free: Optional[FreeReplay] = None
    track_clean_acc: bool = True

    def _init_robust(self: Any, track_clean_acc: bool = True) -> None:
        self.track_clean_acc = bool(track_clean_acc)
        self.train_adv_acc = MulticlassAccuracy(self.num_classes, average="micro", validate_args=False)

    # ---------------------------------------------------------------- logging
    def _eval_clean_acc(self: Any, x: Tensor, y: Tensor) -> None:
        """``train/acc`` from an extra no-grad forward of the eval-mode model (if tracked)."""
        if not self.track_clean_acc:
            return
        with torch.no_grad(), module_mode(self.model, "eval"):
            self._log_clean_acc(self.model(x), y)

    def _log_adv_step(self: Any, loss: Tensor, logits_adv: Tensor, y: Tensor) -> None:
        self._log_train_loss(loss)
        self._log_accuracy("train/adv_acc", self.train_adv_acc, logits_adv, y)

    # ---------------------------------------------------------------- free training
    def _init_free(self: Any, objective: FreeObjective) -> None:
        """Free training as ``objective`` says (its ball, m replays, step; checked by the objective)."""
        self.automatic_optimization = False
        self.free = FreeReplay(objective.threat, objective.replays, objective.effective_step_size)

    def _free_step(self: Any, x: Tensor, y: Tensor, closure: LossClosure,
                   ascent_closure: Optional[AscentClosure] = None) -> None:
        """Replay the batch m times (the optimiser steps m times) and log the step."""
        assert self.free is not None
        self._batch_size = x.shape[0]
        results = self.free.run(self, x, closure, ascent_closure)
        self._eval_clean_acc(x, y)
        self._log_adv_step(torch.stack([r[0] for r in results]).mean(), results[-1][1], y)

    def on_train_epoch_end(self: Any) -> None:
        """Under manual optimisation the LR schedule is ours to step, once per epoch."""
        if not self.automatic_optimization:
            sched = self.lr_schedulers()
            if sched is not None:
                sched.step()
        # checker: a mixin: the next class in the MRO is the LightningModule
        super().on_train_epoch_end()  # type: ignore[misc]

    def on_save_checkpoint(self: Any, checkpoint: dict) -> None:
        if self.free is not None:
            checkpoint["free_delta"] = self.free.state_for_checkpoint(self)
        # checker: a mixin: the next class in the MRO is the LightningModule
        super().on_save_checkpoint(checkpoint)  # type: ignore[misc]

    def on_load_checkpoint(self: Any, checkpoint: dict) -> None:
        if self.free is not None and "free_delta" in checkpoint:
            rank = self.global_rank if self._trainer is not None else 0
            self.free.load_from_checkpoint(checkpoint["free_delta"], rank)
        # checker: a mixin: the next class in the MRO is the LightningModule
        super().on_load_checkpoint(checkpoint)  # type: ignore[misc]
