"""Price prediction on order-book snippets (thesis section 3.3): the valuation models of chapter 3.

Batches are ``(BookSnippet, label)`` with labels 0 down, 1 flat, 2 up (``LOBSTERDataModule``).
The model (``linear``, ``mlp``, ``lstm`` of :mod:`lightning_adv.orderbook.models`) turns the
snippet into its normalised SWA series itself, so ``forward(snippet)`` is what the
order-book attacks differentiate.

Test metrics (table 3.1): ``test/acc`` and its one-standard-error radius ``test/acc_se`` =
sqrt(p (1 - p) / n) over the n test snippets, and the two baselines of section 3.3.3:
``test/baseline_random`` (1/3) and ``test/baseline_majority`` (accuracy on the test labels of
always predicting the most frequent *training* label; the class counts come from the
datamodule's ``class_counts["train"]`` when it has them, else from the labels seen in training,
kept in a buffer so a checkpoint carries them).
"""
from __future__ import annotations

import math
from typing import Any, Optional

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.classification import MulticlassAccuracy

from ..models import load_model_weights
from ..orderbook.models import create_valuation_model
from .optim import OptimConfig, build_optimizer, build_scheduler

__all__ = ["PricePrediction", "ClassCounts"]

NUM_CLASSES = 3


class ClassCounts(Metric):
    """How many labels of each class were seen (summed over DDP ranks)."""

    full_state_update = False

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.add_state("counts", default=torch.zeros(num_classes, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, y: Tensor) -> None:
        self.counts += torch.bincount(y.long(), minlength=self.num_classes)[: self.num_classes]

    def compute(self) -> Tensor:
        return self.counts


class PricePrediction(pl.LightningModule):
    """Three-class SWA movement classifier trained with cross-entropy.

    Args:
        arch: ``linear``, ``mlp`` or ``lstm``.
        steps: snippet length T in grid steps (6000 = 60 s at 0.01 s); must match the data.
        scale: SWA normalisation, relative change to the last value times ``scale`` (1e4: basis points).
        arch_kwargs: ``width``/``depth`` (MLP, thesis 8000 x 4), ``hidden``/``layers`` (LSTM, 100 x 3).
        optim: optimiser and schedule (the thesis trains with SGD on batches of 2000-3000 snippets).
        init_weights: optional weights to start from (loaded with ``weights_only=True``).
    """

    def __init__(self, arch: str = "mlp", steps: int = 6000, scale: float = 1e4,
                 arch_kwargs: Optional[dict[str, Any]] = None,
                 optim: OptimConfig = OptimConfig(optimizer="adam", lr=1e-3, weight_decay=0.0, scheduler="constant"),
                 init_weights: Optional[str] = None) -> None:
        super().__init__()
        optim = OptimConfig.coerce(optim)
        self.optim_cfg = optim
        self.save_hyperparameters(ignore=["optim"])
        self.hparams["optim"] = optim.to_dict()
        self.model = create_valuation_model(arch, steps=steps, scale=scale, **(arch_kwargs or {}))
        if init_weights:
            load_model_weights(self.model, init_weights)
        self.register_buffer("train_label_counts", torch.zeros(NUM_CLASSES, dtype=torch.long))
        self.train_acc = MulticlassAccuracy(NUM_CLASSES, average="micro", validate_args=False)
        self.val_acc = MulticlassAccuracy(NUM_CLASSES, average="micro")
        self.test_acc = MulticlassAccuracy(NUM_CLASSES, average="micro")
        self.test_counts = ClassCounts()

    def forward(self, x: Any) -> Tensor:
        return self.model(x)

    def setup(self, stage: str) -> None:
        """The model's T must be the data's (checked before any step)."""
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        steps = getattr(dm, "steps", None)
        if steps is not None and int(steps) != self.hparams.steps:
            raise ValueError(f"model.steps={self.hparams.steps} but the data ({type(dm).__name__}) has snippets of "
                             f"{steps} steps; set --model.steps {steps}")

    # ------------------------------------------------------------------ steps
    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y = batch
        logits = self.model(x)
        loss = F.cross_entropy(logits, y)
        with torch.no_grad():
            self.train_label_counts += torch.bincount(y.long(), minlength=NUM_CLASSES)[:NUM_CLASSES]
        self.train_acc.update(logits.detach(), y)
        self.log("train/loss", loss.detach(), on_step=True, on_epoch=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def _eval_step(self, batch: Any, stage: str) -> Tensor:
        x, y = batch
        logits = self.model(x)
        loss = F.cross_entropy(logits, y)
        metric = self.val_acc if stage == "val" else self.test_acc
        metric(logits, y)
        if stage == "test":
            self.test_counts.update(y)
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, sync_dist=True)
        self.log(f"{stage}/acc", metric, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._eval_step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._eval_step(batch, "test")

    def on_test_epoch_start(self) -> None:
        self.test_counts.reset()

    def majority_label(self) -> Optional[int]:
        """The most frequent training label: from the datamodule's ``class_counts["train"]``, else the labels seen."""
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        counts = (getattr(dm, "class_counts", None) or {}).get("train")  # LOBSTERDataModule
        if counts is None:
            counts = self.train_label_counts
            if self.trainer.world_size > 1:
                counts = self.all_gather(counts).reshape(-1, NUM_CLASSES).sum(0)
        counts = torch.as_tensor(counts)
        return int(counts.argmax()) if int(counts.sum()) > 0 else None

    def on_test_epoch_end(self) -> None:
        """Standard error of the test accuracy and the two baselines of section 3.3.3."""
        counts = self.test_counts.compute()
        n = int(counts.sum())
        if n == 0:
            return
        p = float(self.test_acc.compute())
        self.log("test/acc_se", math.sqrt(p * (1 - p) / n))
        self.log("test/n", float(n))
        self.log("test/baseline_random", 1.0 / NUM_CLASSES)
        major = self.majority_label()
        if major is not None:
            self.log("test/baseline_majority", float(counts[major]) / n)

    def configure_optimizers(self) -> Any:
        optimizer = build_optimizer(self.model.parameters(), self.optim_cfg)
        max_epochs = self.trainer.max_epochs if self._trainer is not None else None
        scheduler = build_scheduler(optimizer, self.optim_cfg, max_epochs)
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
