"""Exponential moving average of the weights (EMA), on Lightning's ``WeightAveraging`` callback.

Robust training recipes evaluate an EMA of the weights (Gowal et al. 2020, "Uncovering the
limits of adversarial training": decay 0.995 with warm-up; Rebuffi et al. 2021: 0.999). This
is Lightning's :class:`~lightning.pytorch.callbacks.WeightAveraging` (an ``AveragedModel`` of the
whole module, parameters and, by default, buffers such as BatchNorm statistics, updated after
every optimiser step) with what the project needs on top:

* **warm-up** (``warmup=True``): the decay after ``n`` updates is ``min(decay, (1 + n) / (10 + n))``
  (TensorFlow's ``ExponentialMovingAverage(num_updates=...)``, as Gowal et al. use), so the average
  does not stay close to the random initial weights for ~1/(1-decay) steps;
* **what is evaluated**: during every validation epoch *of a fit* the averaged weights are swapped
  into the module (Lightning's ``on_validation_epoch_start``/``end``), and the evaluator callbacks
  attack inside ``on_validation_batch_end``, so ``val/acc`` and ``val/robust_acc*`` are the averaged
  model's whatever the callback order; at the end of fit the averaged weights are copied into the
  module, and every checkpoint's ``state_dict`` holds the averaged weights (the raw ones under
  ``current_model_state``), so ``train.py test --ckpt_path`` and a teacher loaded from a checkpoint
  are the averaged model;
* **fixes** to Lightning 2.6's callback: it restored ``current_model_state`` into the module when a
  checkpoint was loaded for ``test``/``validate`` after a fit in the same process (the raw weights
  would be tested), swapped a stale average in during ``validate``, and wrote the averaged weights as
  ``current_model_state`` of the final ``last.ckpt`` (a resumed run would continue from the average).
  Here the raw weights are kept for that checkpoint, swaps and restores happen only while fitting,
  and the epoch of the last update is saved with the step;
* **AWP**: an objective that perturbs the weights inside a step (``AWP``) takes the perturbation off
  in the module's ``optimizer_step``, before any callback's ``on_train_batch_end``, so the average is
  of the unperturbed weights (with gradient accumulation the batches without a step are not averaged).

Logged: ``ema/updates`` (number of averaging updates so far, per epoch).
"""
from __future__ import annotations

import copy
from typing import Any, Optional

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import WeightAveraging
from torch import Tensor

from lightning_adv.validation import check_int, check_real

__all__ = ["EMA", "WarmupEMA"]


class WarmupEMA:
    """``avg_fn`` of ``AveragedModel``: ``d * avg + (1 - d) * current`` with ``d = decay`` or, with
    ``warmup``, ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates. Integer buffers (BatchNorm's
    ``num_batches_tracked``) take the current value."""

    def __init__(self, decay: float, warmup: bool) -> None:
        self.decay, self.warmup = float(decay), bool(warmup)

    def rate(self, n: int) -> float:
        return min(self.decay, (1 + n) / (10 + n)) if self.warmup else self.decay

    def __call__(self, averaged: Tensor, current: Tensor, num_averaged: Tensor) -> Tensor:
        if not averaged.is_floating_point():
            return current
        d = self.rate(int(num_averaged))
        return averaged * d + current * (1.0 - d)


class EMA(WeightAveraging):
    """EMA of the weights, evaluated at validation and test (see the module doc).

    Args:
        decay: EMA decay in ``(0, 1)`` (0.999: Rebuffi et al. 2021; 0.995: Gowal et al. 2020).
        warmup: decay ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates (Gowal et al.).
        use_buffers: average the buffers too (BatchNorm running statistics); ``False`` keeps the
            averaged model's buffers at their initial copy (recompute them with
            ``torch.optim.swa_utils.update_bn`` before use).
        update_every_n_steps: update after every n-th optimiser step.
        update_starting_at_step: first optimiser step (0-based) that updates; before it the first
            update copies the weights.
        device: where the averaged copy lives (``None``: the module's device; ``"cpu"`` saves GPU memory).
    """

    def __init__(self, decay: float = 0.999, warmup: bool = True, use_buffers: bool = True,
                 update_every_n_steps: int = 1, update_starting_at_step: int = 0,
                 device: Optional[str] = None) -> None:
        check_real("EMA.decay", decay, positive=True, maximum=1.0, below_max=True, hint="such as 0.999")
        for name, value, low in (("update_every_n_steps", update_every_n_steps, 1),
                                 ("update_starting_at_step", update_starting_at_step, 0)):
            check_int(f"EMA.{name}", value, low)
        self.decay, self.warmup = float(decay), bool(warmup)
        self.update_every_n_steps, self.update_starting_at_step = update_every_n_steps, update_starting_at_step
        super().__init__(device=device, use_buffers=use_buffers, avg_fn=WarmupEMA(decay, warmup))
        self._raw_at_end: Optional[dict[str, Tensor]] = None

    def should_update(self, step_idx: Optional[int] = None, epoch_idx: Optional[int] = None) -> bool:
        """After optimiser steps ``start, start + n, ...``; never at an epoch end."""
        return (step_idx is not None and step_idx >= self.update_starting_at_step
                and (step_idx - self.update_starting_at_step) % self.update_every_n_steps == 0)

    @staticmethod
    def _fitting(trainer: pl.Trainer) -> bool:
        return trainer.state.fn == "fit"

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._raw_at_end = None
        super().setup(trainer, pl_module, stage)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._average_model is not None:
            pl_module.log("ema/updates", float(self._average_model.n_averaged), on_step=False, on_epoch=True)

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._fitting(trainer):
            super().on_validation_epoch_start(trainer, pl_module)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._fitting(trainer):
            super().on_validation_epoch_end(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # keep the raw weights for the checkpoints written after this (RobustCheckpoint's final last.ckpt)
        self._raw_at_end = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
        super().on_train_end(trainer, pl_module)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        super().on_save_checkpoint(trainer, pl_module, checkpoint)
        if self._average_model is not None and self._raw_at_end is not None:
            checkpoint["current_model_state"] = copy.copy(self._raw_at_end)

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        # outside fit the module keeps the checkpoint's state_dict: the averaged weights
        if self._fitting(trainer):
            super().on_load_checkpoint(trainer, pl_module, checkpoint)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "latest_update_epoch": self._latest_update_epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._latest_update_epoch = int(state_dict.get("latest_update_epoch", -1))

    def averaged_state(self) -> Optional[dict[str, torch.Tensor]]:
        """The averaged module's ``state_dict`` (None before fit): for tests and inspection."""
        if self._average_model is None:
            return None
        return {k: v.detach().clone() for k, v in self._average_model.module.state_dict().items()}
