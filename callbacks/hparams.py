"""The TensorBoard hparams tab: the run's hyperparameters with its clean and robust accuracy."""
from __future__ import annotations

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger

from ._suite_common import SuiteCallback

__all__ = ["HparamsMetrics"]

#: hparams-tab metric -> the stage metric it shows (``{stage}/acc``: the module's clean accuracy,
#: ``{stage}/robust_acc``: the evaluator's per-example worst case)
METRICS = {"hparams/clean_acc": "acc", "hparams/robust_acc": "robust_acc"}


class HparamsMetrics(Callback):
    """Shows a run in TensorBoard's hparams tab with its clean and robust accuracy.

    Lightning writes the hparams session only with metrics; without them it shows the
    ``hp_metric = -1`` placeholder (``train.py`` turns that off: ``default_hp_metric=False``).
    After every validation (not the sanity check) and test epoch this callback reads
    ``{stage}/acc`` and ``{stage}/robust_acc`` and, on rank zero, for each TensorBoard logger:

    * writes the session once, with the logger's hyperparameters (model and datamodule) and
      the metrics ``hparams/clean_acc`` / ``hparams/robust_acc``, as soon as every expected
      value is there (the robust one only when an evaluator callback runs), else at the end
      of the run with what is there;
    * logs the two scalars again after each later evaluation, so the tab shows the latest
      (after ``test``: the test accuracies).

    Other loggers log ``{stage}/acc`` and ``{stage}/robust_acc`` as ordinary metrics already.
    ``train.py`` adds this callback to every run.
    """

    def __init__(self) -> None:
        self._written: set[int] = set()
        self._ckpt_step = 0

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        """``validate`` / ``test`` from a checkpoint run at global step 0: log at the checkpoint's step instead,
        so that a test appended to the fit's run continues its time series."""
        self._ckpt_step = int(checkpoint.get("global_step", 0) or 0)

    def _values(self, trainer: pl.Trainer, stage: str) -> dict[str, float]:
        m = trainer.callback_metrics
        return {k: float(m[f"{stage}/{v}"]) for k, v in METRICS.items() if f"{stage}/{v}" in m}

    @staticmethod
    def _expected(trainer: pl.Trainer) -> set[str]:
        robust = any(isinstance(cb, SuiteCallback) for cb in trainer.callbacks)
        return set(METRICS) if robust else {"hparams/clean_acc"}

    def _log(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str, final: bool) -> None:
        if not trainer.is_global_zero:
            return
        values = self._values(trainer, stage)
        if not values:
            return
        ready = final or self._expected(trainer) <= set(values)
        step = max(int(trainer.global_step), self._ckpt_step if trainer.state.fn != "fit" else 0)
        for lg in trainer.loggers:
            if not isinstance(lg, TensorBoardLogger):
                continue
            if id(lg) in self._written:
                lg.log_metrics(values, step=step)
            elif ready:
                params = {k: v for k, v in (dict(lg.hparams) or dict(pl_module.hparams)).items() if k != "_instantiator"}
                lg.log_hyperparams(params, metrics=values, step=step)
                self._written.add(id(lg))

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._log(trainer, pl_module, "val", final=trainer.state.fn == "validate")

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._log(trainer, pl_module, "test", final=True)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not any(id(lg) in self._written for lg in trainer.loggers):
            self._log(trainer, pl_module, "val", final=True)
