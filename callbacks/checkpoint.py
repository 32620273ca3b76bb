"""ModelCheckpoint that keeps ``last.ckpt`` always and the best by a metric when it exists."""
from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_warn

from .resume import at_epoch_end

__all__ = ["RobustCheckpoint"]


class RobustCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose top-k step is skipped (with one warning) on epochs where
    the monitored metric was not logged.

    ``PGDEvaluation(every_n_epochs=k)`` logs ``val/robust_acc`` only every k epochs; a
    plain ``ModelCheckpoint(monitor='val/robust_acc')`` raises on the other epochs. This
    one saves ``last.ckpt`` every time and updates the best checkpoint whenever the
    metric is there.

    ``every_n_train_steps`` always writes ``last.ckpt`` at those steps, also before the monitored
    metric was first logged (Lightning 2.6 defers such a save to the end of the next validation,
    so a run killed in its first epoch would have no checkpoint to resume from), and ``last.ckpt``
    holds the final state when training ends (with ``every_n_train_steps`` Lightning saves nothing
    at the end of an epoch whose last step is not a multiple of n). A step save that falls on an
    epoch's last batch is written at the end of that epoch instead, after its validation: resuming
    from a checkpoint taken between the last batch and the validation skips the validation and
    draws the next epoch's data order too early (tests/test_resume.py).
    """

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if getattr(self, "_deferred_step", None) == trainer.global_step and not self._should_skip_saving_checkpoint(trainer):
            candidates = self._monitor_candidates(trainer)
            self._save_topk_checkpoint(trainer, candidates)
            self._save_last_checkpoint(trainer, candidates)
        self._deferred_step = None
        super().on_train_epoch_end(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.save_last and self._last_global_step_saved != trainer.global_step and not trainer.sanity_checking:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        super().on_train_end(trainer, pl_module)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        n = self._every_n_train_steps
        if n >= 1 and trainer.global_step % n == 0 and at_epoch_end(trainer):
            # the epoch's last batch: a checkpoint here resumes without the epoch-end validation (Lightning
            # 2.6 skips it) and with the next epoch's data order unknown; save after the validation instead
            self._deferred_step = trainer.global_step
            return
        if (n >= 1 and trainer.global_step % n == 0 and self.save_last and self.monitor is not None
                and not self._should_skip_saving_checkpoint(trainer)):
            candidates = self._monitor_candidates(trainer)
            if self.monitor not in candidates:
                self._save_last_checkpoint(trainer, candidates)
                return
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def _save_topk_checkpoint(self, trainer: pl.Trainer, monitor_candidates: dict[str, Any]) -> None:
        if self.monitor is not None and self.monitor not in monitor_candidates:
            if not getattr(self, "_warned_missing", False):
                rank_zero_warn(
                    f"checkpoint.monitor={self.monitor!r} was not logged this time (available: "
                    f"{sorted(monitor_candidates)}); only last.ckpt is saved until it is."
                )
                self._warned_missing = True
            return
        super()._save_topk_checkpoint(trainer, monitor_candidates)
