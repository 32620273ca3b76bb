"""A warning when a classifier collapses: its validation predictions concentrate on one class.

Knowledge distillation of a tiny student at a high temperature, an under-sized adversarially trained
student or a learning rate far too high can end with a model that predicts one class for every
input, with exit status 0 and a ``last.ckpt``. :class:`CollapseWarning` (added by ``train.py`` to every
run) counts the clean predictions of each validation and, at its end, writes one line naming the
epoch, the share and the likely causes when

* one class takes at least ``max_share`` of the predictions and at least ``ratio`` times its share of
  the labels, for ``epochs`` validations in a row (2 by default: a model a few steps into training
  often predicts one class once), or
* the clean accuracy stays within ``chance_margin`` times chance (1 / classes) for ``chance_epochs``
  validations in a row.

``stop=True`` (``--trainer.callbacks+=lightning_adv.callbacks.CollapseWarning
--trainer.callbacks.stop true``) also stops the run there. The predictions are the clean forward of the
module's ``model`` on the batch's inputs, taken with a forward hook (no extra forward); when a module
makes no such forward, the callback runs one under ``no_grad``. Batches that are not ``(inputs,
labels)`` (episodic few-shot tasks) are skipped.
"""
from __future__ import annotations

import logging
from typing import Any, Optional

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from lightning_adv.validation import check_int, check_real

__all__ = ["CollapseWarning"]

log = logging.getLogger("lightning_adv")


class CollapseWarning(Callback):
    """One line when the validation predictions collapse onto one class (see the module doc).

    Args:
        max_share: the share of predictions one class must reach (with ``ratio``) to count as collapse.
        ratio: ... and how many times its share of the labels it must be.
        epochs: consecutive validations with one class that dominant that count as collapse.
        chance_epochs: consecutive validations at chance accuracy that count as collapse.
        chance_margin: accuracy at most ``chance_margin / classes`` is "at chance".
        stop: stop the run (``trainer.should_stop``) once it collapsed.
    """

    def __init__(self, max_share: float = 0.8, ratio: float = 3.0, epochs: int = 2, chance_epochs: int = 3,
                 chance_margin: float = 1.2, stop: bool = False) -> None:
        self.max_share = check_real("max_share", max_share, positive=True)
        self.ratio = check_real("ratio", ratio, positive=True)
        self.epochs = check_int("epochs", epochs, 1)
        self.chance_epochs = check_int("chance_epochs", chance_epochs, 1)
        self.chance_margin = check_real("chance_margin", chance_margin, positive=True)
        self.stop = bool(stop)
        self.lines: list[str] = []  # every warning written (tests, and callers of the Python API)
        self._at_chance = self._one_class = 0
        self._reset()

    def _reset(self) -> None:
        self._preds: Optional[Tensor] = None
        self._labels: Optional[Tensor] = None
        self._correct = 0.0
        self._x: Optional[Tensor] = None
        self._pred: Optional[Tensor] = None
        self._classes = 0
        self._hook: Any = None

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._reset()
        model = getattr(pl_module, "model", None)
        if isinstance(model, torch.nn.Module):
            self._hook = model.register_forward_hook(self._capture)

    def _capture(self, module: Any, args: Any, out: Any) -> None:
        if self._x is not None and self._pred is None and args and args[0] is self._x \
                and isinstance(out, Tensor) and out.dim() == 2:
            self._pred = out.detach().argmax(1)
            self._classes = int(out.shape[1])

    def on_validation_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                                  batch_idx: int, dataloader_idx: int = 0) -> None:
        ok = (dataloader_idx == 0 and self._hook is not None and isinstance(batch, (list, tuple)) and len(batch) == 2
              and all(isinstance(t, Tensor) for t in batch) and batch[0].dim() >= 2)
        self._x, self._pred = (batch[0] if ok else None), None

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        x, pred = self._x, self._pred
        self._x = self._pred = None
        if x is None:
            return
        y = batch[1]
        labels = y.argmax(1) if y.is_floating_point() and y.dim() == 2 else y
        if labels.dim() != 1 or labels.is_floating_point():
            return
        if pred is None:  # the module made no clean forward of the batch's inputs: one here
            try:
                with torch.no_grad():
                    out = pl_module.model(x)
            except Exception:  # noqa: BLE001 - the model does not take the batch's inputs as they are: skip
                out = None
            if not isinstance(out, Tensor) or out.dim() != 2:
                self._hook.remove()  # not a classifier of these inputs: nothing to count this validation
                self._hook = None
                return
            pred, self._classes = out.argmax(1), int(out.shape[1])
        classes = self._classes
        self._preds = _add(self._preds, torch.bincount(pred, minlength=classes))
        self._labels = _add(self._labels, torch.bincount(labels, minlength=classes))
        self._correct += float((pred == labels).sum())

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        if trainer.sanity_checking or self._preds is None or self._labels is None:
            return
        preds, labels = self._preds.float(), self._labels.float()
        if trainer.world_size > 1:  # every rank saw a part of the split
            preds = trainer.strategy.reduce(preds, reduce_op="sum")
            labels = trainer.strategy.reduce(labels, reduce_op="sum")
        preds, labels = preds.cpu(), labels.cpu()
        total = float(preds.sum())
        if total == 0:
            return
        classes = int(preds.numel())
        top = int(preds.argmax())
        share, label_share = float(preds[top]) / total, float(labels[top]) / max(float(labels.sum()), 1.0)
        acc = self._correct / total if trainer.world_size == 1 else None
        chance = acc is not None and acc <= self.chance_margin / classes
        self._at_chance = self._at_chance + 1 if chance else 0
        epoch = trainer.current_epoch
        one_class = share >= self.max_share and share >= self.ratio * label_share
        self._one_class = self._one_class + 1 if one_class else 0
        if self._one_class >= self.epochs:
            what = (f"{share:.0%} of the validation predictions are class {top} (its share of the labels: "
                    f"{label_share:.0%})")
        elif self._at_chance >= self.chance_epochs:
            what = f"clean accuracy {acc:.1%} has been at chance (1/{classes}) for {self._at_chance} validations"
        else:
            return
        line = (f"collapse warning: epoch {epoch}: {what}; likely causes: a learning rate too high "
                f"(model.optim.lr), a distillation temperature too high (temperature), a model too small for the "
                f"task (model.arch, model.arch_kwargs)")
        line += "; stopping (CollapseWarning stop=true)" if self.stop else ""
        self.lines.append(line)
        if trainer.is_global_zero:
            bar = trainer.progress_bar_callback
            if bar is not None and hasattr(bar, "print") and getattr(bar, "is_enabled", False):
                bar.print(line)  # above the bar, not torn by it
            else:
                log.warning(line)
        if self.stop:
            trainer.should_stop = True


def _add(total: Optional[Tensor], counts: Tensor) -> Tensor:
    if total is None:
        return counts
    if total.numel() < counts.numel():
        total = torch.nn.functional.pad(total, (0, counts.numel() - total.numel()))
    elif counts.numel() < total.numel():
        counts = torch.nn.functional.pad(counts, (0, total.numel() - counts.numel()))
    return total + counts
