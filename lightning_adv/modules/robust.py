"""What every module that trains on perturbed inputs shares (AdvTraining, ARD, Fast-ARD).

:class:`RobustTrainingMixin` sits in front of :class:`~lightning_adv.modules.Classifier`
(or a subclass) in the bases of a module and adds:

* logging of one training step on perturbed inputs: ``train/loss``, ``train/adv_acc``
  (accuracy on the training perturbations) and ``train/acc`` (clean accuracy, from logits
  at hand or from an extra no-grad eval-mode forward);
* the plumbing of free training (m replays of each batch, :class:`FreeReplay`): manual
  optimisation, the LR schedule stepped once per epoch, the persistent perturbation saved
  in and restored from checkpoints (key ``free_delta``, one slice per DDP rank).
"""
from __future__ import annotations

import math
from typing import Any, Optional

import torch
from torch import Tensor
from torchmetrics.classification import MulticlassAccuracy

from ..attacks import ThreatModel, module_mode
from .free import AscentClosure, FreeReplay, LossClosure

__all__ = ["RobustTrainingMixin", "check_free_args"]


def check_free_args(free_replays: Any, free_step_size: Optional[float], check_replays: bool = True) -> None:
    """Validate the free-training arguments of a module, naming the parameter at fault."""
    if check_replays and (isinstance(free_replays, bool) or int(free_replays) != free_replays or free_replays < 1):
        raise ValueError(f"free_replays (m) must be an integer >= 1, got free_replays={free_replays}")
    if free_step_size is not None and (not math.isfinite(free_step_size) or free_step_size <= 0):
        raise ValueError(f"free_step_size must be > 0 (or null for eps), got free_step_size={free_step_size}")


class RobustTrainingMixin:
    """Training-step logging and free-training plumbing for adversarial modules.

    Expects the host to be a :class:`Classifier` (``self.model``, ``self.train_acc``,
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
    def _init_free(self: Any, threat: ThreatModel, free_replays: int, free_step_size: Optional[float]) -> None:
        """Free training in ``threat``'s ball: m replays, step ``free_step_size`` (default eps)."""
        check_free_args(free_replays, free_step_size)
        self.automatic_optimization = False
        step = free_step_size if free_step_size is not None else threat.eps
        self.free = FreeReplay(threat, int(free_replays), step)

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
