"""Training scalars summed on the device over an epoch and logged once at its end.

One ``LightningModule.log`` call costs about a millisecond of host time (Lightning's result
collection) and a torchmetrics ``update`` a few hundred microseconds; a training step that logs
three values spends more time there than a small model's forward and backward. The modules
therefore add each step's values to running sums here (a few tensor additions, no host-device
copy, no argument checks) and :meth:`EpochScalars.flush` logs the epoch values at the epoch's last
batch (``on_train_batch_end``, so callbacks read them in their ``on_train_epoch_end`` as before; an
epoch cut short flushes in the module's ``on_train_epoch_end``), the same numbers Lightning's
``on_epoch=True`` reduction gives:

* means: ``sum_b value_b * n_b / sum_b n_b`` over the batches ``b`` of ``n_b`` examples
  (Lightning's batch-size-weighted mean, in fp32, this rank's value as ``sync_dist=False``);
* accuracies: correct / seen over the epoch, summed over DDP ranks (torchmetrics' micro
  ``MulticlassAccuracy``).

``step_logging=True`` on a module keeps the per-step path instead (``self.log`` every step).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["EpochScalars"]


class EpochScalars:
    """Running sums of the epoch's training scalars (see the module doc)."""

    def __init__(self) -> None:
        self._means: dict[str, list[Any]] = {}  # name -> [sum of value * n (fp32 tensor), sum of n (int)]
        self._accs: dict[str, list[Any]] = {}  # name -> [correct (int64 tensor), seen (int)]
        self._prog_bar: set[str] = set()

    def mean(self, name: str, value: Tensor, n: int) -> None:
        """Add a batch of ``n`` examples whose mean is ``value`` (a 0-d tensor)."""
        v = value.detach().to(torch.get_default_dtype()) * n
        acc = self._means.get(name)
        if acc is None:
            self._means[name] = [v, n]
        else:
            acc[0] = acc[0] + v
            acc[1] += n

    def accuracy(self, name: str, logits: Tensor, y: Tensor, prog_bar: bool = False) -> None:
        """Add a batch of predictions ``logits.argmax(-1)`` against class indices ``y``."""
        correct = (logits.detach().argmax(-1) == y).sum()
        acc = self._accs.get(name)
        if acc is None:
            self._accs[name] = [correct, y.numel()]
        else:
            acc[0] = acc[0] + correct
            acc[1] += y.numel()
        if prog_bar:
            self._prog_bar.add(name)

    def reset(self) -> None:
        self._means.clear()
        self._accs.clear()

    def flush(self, module: Any) -> None:
        """Log every epoch value through ``module.log`` (one call per name) and start over."""
        for name, (total, n) in self._means.items():
            module.log(name, total / n, on_step=False, on_epoch=True, prog_bar=name in self._prog_bar)
        strategy = module.trainer.strategy if module._trainer is not None else None
        for name, (correct, seen) in self._accs.items():
            counts = torch.stack([correct, torch.as_tensor(seen, device=correct.device)])
            if strategy is not None:
                counts = strategy.reduce(counts, reduce_op="sum")
            module.log(name, counts[0].float() / counts[1].float(), on_step=False, on_epoch=True,
                       prog_bar=name in self._prog_bar)
        self.reset()
