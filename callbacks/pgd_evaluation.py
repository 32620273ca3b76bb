"""Robust accuracy under a list of attacks, during validation and test."""
from __future__ import annotations

from typing import Any, Optional

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor
from torchmetrics import MeanMetric, Metric
from torchmetrics.classification import MulticlassAccuracy

from lightning_adv.attacks import PGD

__all__ = ["PGDEvaluation", "default_eval_attacks"]


def default_eval_attacks() -> list[PGD]:
    """The thesis' evaluation attack: PGD-20, Linf, eps 8/255, step 2/255, random start."""
    return [PGD(eps=8 / 255, steps=20, step_size=2 / 255, bn_mode="eval")]


class PGDEvaluation(Callback):
    """Robust accuracy on the validation and/or test set for a list of attacks.

    For every attack ``a`` it logs ``<stage>/robust_acc/<a.label>``, and
    ``<stage>/robust_acc``: the accuracy when each example counts as correct only if it
    survives every attack of the list (the per-example worst case). Counts are
    torchmetrics states, summed across DDP ranks.

    The attacked model is the LightningModule's ``forward``, in the mode the attack's
    ``bn_mode`` asks (eval by default); attacks re-enable autograd, so they work in
    validation under ``no_grad`` and in ``trainer.test`` under ``inference_mode``.

    A TensorBoard image grid shows, for ``num_images`` fixed validation images (the first
    of the first batch), the clean image, the adversarial image of the first attack and
    the perturbation amplified to the full [0, 1] range.

    Args:
        attacks: attack configs (default: PGD-20 Linf 8/255, step 2/255).
        every_n_epochs: run on validation every n epochs and at the last epoch (test, ``validate``
            and ``fast_dev_run``: always).
        on_validation, on_test: which stages to evaluate.
        limit_batches: attack only the first n batches of each evaluation (None: all).
        num_images: images in the TensorBoard grid (0 disables it).
    """

    def __init__(
        self,
        attacks: Optional[list[PGD]] = None,
        every_n_epochs: int = 1,
        on_validation: bool = True,
        on_test: bool = True,
        limit_batches: Optional[int] = None,
        num_images: int = 8,
    ) -> None:
        super().__init__()
        attacks = [PGD.coerce(a, 'PGDEvaluation.attacks') for a in (attacks or default_eval_attacks())]
        if not attacks:
            raise ValueError("PGDEvaluation.attacks is empty; give at least one attack or drop the callback")
        labels = [a.label for a in attacks]
        if len(set(labels)) != len(labels):
            raise ValueError(f"PGDEvaluation.attacks have duplicate names {labels}; set `name` on each attack")
        if every_n_epochs < 1:
            raise ValueError(f"PGDEvaluation.every_n_epochs must be >= 1, got every_n_epochs={every_n_epochs}")
        if limit_batches is not None and limit_batches < 1:
            raise ValueError(f"PGDEvaluation.limit_batches must be >= 1 or null, got limit_batches={limit_batches}")
        if num_images < 0:
            raise ValueError(f"PGDEvaluation.num_images must be >= 0, got num_images={num_images}")
        self.attacks = attacks
        self.every_n_epochs = every_n_epochs
        self.on_validation = on_validation
        self.on_test = on_test
        self.limit_batches = limit_batches
        self.num_images = num_images
        self._metrics: Optional[dict[str, Metric]] = None
        self._active = False

    # ----------------------------------------------------------------- state
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        num_classes = getattr(pl_module, "num_classes", None) or pl_module.hparams.get("num_classes")
        if not num_classes:
            raise ValueError("PGDEvaluation needs a module with `num_classes`")
        metrics = {a.label: MulticlassAccuracy(num_classes, average="micro") for a in self.attacks}
        metrics["worst_case"] = MeanMetric()
        self._metrics = {k: m.to(pl_module.device) for k, m in metrics.items()}

    def _should_run(self, trainer: pl.Trainer, stage: str) -> bool:
        if stage == "test":
            return self.on_test
        if not self.on_validation or trainer.sanity_checking:
            return False
        if trainer.state.fn == "validate" or trainer.fast_dev_run:
            return True
        epoch = trainer.current_epoch + 1
        last = trainer.max_epochs is not None and epoch >= trainer.max_epochs
        return last or epoch % self.every_n_epochs == 0

    def _start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._active = self._should_run(trainer, stage)
        if self._active and self._metrics is not None:
            for k, m in self._metrics.items():
                self._metrics[k] = m.to(pl_module.device)
                m.reset()

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start(trainer, pl_module, "val")

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start(trainer, pl_module, "test")

    # ----------------------------------------------------------------- batches
    def _attack_batch(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int,
                      dataloader_idx: int, stage: str) -> None:
        if not self._active or self._metrics is None:
            return
        if self.limit_batches is not None and batch_idx >= self.limit_batches:
            return
        x, y = batch[0], batch[1]
        survived = torch.ones(y.shape[0], dtype=torch.bool, device=y.device)
        first_adv: Optional[Tensor] = None
        for attack in self.attacks:
            x_adv = attack(pl_module, x, y)
            with torch.no_grad():
                logits = pl_module(x_adv)
            self._metrics[attack.label].update(logits, y)
            survived &= logits.argmax(dim=1) == y
            if first_adv is None:
                first_adv = x_adv
        self._metrics["worst_case"].update(survived.float())
        if stage == "val" and batch_idx == 0 and dataloader_idx == 0 and first_adv is not None:
            self._log_grid(trainer, pl_module, x, first_adv)

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                                batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._attack_batch(trainer, pl_module, batch, batch_idx, dataloader_idx, "val")

    def on_test_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                          batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._attack_batch(trainer, pl_module, batch, batch_idx, dataloader_idx, "test")

    # ----------------------------------------------------------------- epoch end
    def _finish(self, pl_module: pl.LightningModule, stage: str) -> None:
        if not self._active or self._metrics is None:
            return
        for attack in self.attacks:
            pl_module.log(f"{stage}/robust_acc/{attack.label}", self._metrics[attack.label].compute(),
                          prog_bar=False)
        pl_module.log(f"{stage}/robust_acc", self._metrics["worst_case"].compute(), prog_bar=True)
        self._active = False

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._finish(pl_module, "val")

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._finish(pl_module, "test")

    # ----------------------------------------------------------------- images
    def _log_grid(self, trainer: pl.Trainer, pl_module: pl.LightningModule, x: Tensor, x_adv: Tensor) -> None:
        if self.num_images == 0 or not trainer.is_global_zero:
            return
        loggers = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        if not loggers:
            return
        from torchvision.utils import make_grid

        n = min(self.num_images, x.shape[0])
        clean, adv = x[:n].detach().float().cpu(), x_adv[:n].detach().float().cpu()
        delta = adv - clean
        scale = delta.flatten(1).abs().max(dim=1).values.clamp_min(1e-12).view(-1, *([1] * (delta.dim() - 1)))
        amplified = 0.5 + 0.5 * delta / scale
        grid = make_grid(torch.cat([clean, adv, amplified]), nrow=n, padding=1, pad_value=1.0)
        for lg in loggers:
            lg.experiment.add_image("val/adversarial_examples", grid, global_step=trainer.global_step)
