"""RankMin / RankMax (thesis section 6.5.1) as a callback any module can take."""
from __future__ import annotations

from typing import Any, Optional

import lightning.pytorch as pl
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback

from lightning_adv.analysis import RANK_MODES, layer_input_sizes, project_model_
from lightning_adv.analysis.spectral import operator_layers

from ._analysis_common import fixed_sample, log_scalars, training_dataset

__all__ = ["RankProjection"]


class RankProjection(Callback):
    """Periodically replace every conv/linear operator by its rank projection.

    RankMin (``mode="min"``) zeroes the singular values below the threshold, RankMax
    (``"max"``) clips them at it; convolutions go through the FFT over their input size
    and are cropped back to their k x k support (approximate, see ``analysis.spectral``).
    With natural training (``Classifier``) this is RankMin / RankMax, with ``AdvTraining``
    RankMinAdv / RankMaxAdv: the module is unchanged.

    The thesis fine-tunes a pretrained model for 15 epochs (8 for the MLP), projecting
    periodically and retraining in between so that the loss stays small.

    Args:
        mode: ``"min"`` or ``"max"``.
        threshold: a fraction of each layer's largest singular value (``relative``), or an
            absolute value.
        relative: see ``threshold``.
        start_epoch: first epoch at whose start the projection is applied.
        every_n_epochs: period of the projection in epochs.
        include_linear: project linear layers too (the MLP rows need it).
        final_projection: project once more after the last training batch (before the
            last validation and checkpoint), so the saved model has the projected
            spectrum (else it has the fine-tuned one).
    """

    def __init__(self, mode: str = "min", threshold: float = 0.5, relative: bool = True, start_epoch: int = 0,
                 every_n_epochs: int = 1, include_linear: bool = True, final_projection: bool = False) -> None:
        if mode not in RANK_MODES:
            raise ValueError(f"RankProjection.mode={mode!r} is not one of {RANK_MODES} (min: RankMin, max: RankMax)")
        if not threshold > 0 or (relative and threshold > 1):
            raise ValueError(f"RankProjection.threshold={threshold} must be > 0"
                             + (" and <= 1 with relative=true" if relative else ""))
        if start_epoch < 0 or every_n_epochs < 1:
            raise ValueError(f"RankProjection needs start_epoch >= 0 and every_n_epochs >= 1, got "
                             f"start_epoch={start_epoch}, every_n_epochs={every_n_epochs}")
        self.mode, self.threshold, self.relative = mode, float(threshold), relative
        self.start_epoch, self.every_n_epochs = start_epoch, every_n_epochs
        self.include_linear, self.final_projection = include_linear, final_projection
        self.applied_epochs: list[int] = []
        self._sizes: Optional[dict[str, int]] = None

    def _project(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        model = pl_module.model
        if self._sizes is None:
            x, _ = fixed_sample(training_dataset(trainer), 1, 0)
            self._sizes = layer_input_sizes(model, x.to(pl_module.device))
        project_model_(model, self._sizes, self.mode, self.threshold, self.relative, self.include_linear)
        if dist.is_available() and dist.is_initialized() and trainer.world_size > 1:
            with torch.no_grad():  # one projection for all ranks (SVDs may differ in the last bits)
                for _, m in operator_layers(model):
                    dist.broadcast(m.weight.data, src=0)
        self.applied_epochs.append(trainer.current_epoch)
        log_scalars(trainer, {"rank_projection/applied": 1.0})

    def on_train_epoch_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        epoch = trainer.current_epoch
        if epoch >= self.start_epoch and (epoch - self.start_epoch) % self.every_n_epochs == 0:
            self._project(trainer, pl_module)

    def on_train_batch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        last_epoch = trainer.max_epochs is not None and trainer.current_epoch + 1 == trainer.max_epochs
        if self.final_projection and last_epoch and batch_idx + 1 == trainer.num_training_batches:
            self._project(trainer, pl_module)
