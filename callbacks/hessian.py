"""Extreme eigenvalues of the training-loss Hessian, loss and gradient norm (thesis table 6.1)."""
from __future__ import annotations

from typing import Optional

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from lightning_adv.analysis import DatasetHessian, extreme_eigenvalues
from lightning_adv.attacks import module_mode

from ._analysis_common import fixed_sample, log_scalars, training_dataset

__all__ = ["HessianEigenvalues"]


class HessianEigenvalues(Callback):
    """Largest / smallest Hessian eigenvalue of the mean training loss, with loss and gradient norm.

    The loss is the cross-entropy of ``pl_module.model`` in eval mode (BatchNorm running
    statistics) over a fixed subset of the training set without augmentation
    (``num_samples``; None: all of it). Under DDP each rank takes every
    ``world_size``-th example of the subset and the sums are all-reduced before dividing
    by the global count, so every rank runs the same Lanczos iteration on the same
    operator.

    Logged (``hessian/max_eig``, ``hessian/min_eig``, ``hessian/loss``,
    ``hessian/grad_norm``, ``hessian/matvecs``) at fit start (``at_start``), every
    ``every_n_epochs`` epochs, and at fit end (``at_end``); ``history`` keeps
    ``(label, stats)`` with label ``"start"``, ``"epoch<E>"`` or ``"end"``.

    Args:
        num_samples: size of the fixed subset (None: the whole training set).
        batch_size: examples per forward in the Hessian-vector products.
        method: ``"lanczos"`` (default) or ``"power"`` (shifted power iteration, the thesis').
        iterations: Lanczos steps, or power iterations per end.
        every_n_epochs: period (None: only at start / end).
        at_start, at_end: measure before the first and after the last epoch.
        seed: seed of the subset and of the start vector.
    """

    def __init__(self, num_samples: Optional[int] = 1000, batch_size: int = 500, method: str = "lanczos",
                 iterations: int = 30, every_n_epochs: Optional[int] = None, at_start: bool = True,
                 at_end: bool = True, seed: int = 0) -> None:
        if method not in ("lanczos", "power"):
            raise ValueError(f"HessianEigenvalues.method={method!r} is not one of ('lanczos', 'power')")
        if num_samples is not None and num_samples < 1:
            raise ValueError(f"HessianEigenvalues.num_samples must be >= 1 or null (all), got {num_samples}")
        if batch_size < 1 or iterations < 1 or (every_n_epochs is not None and every_n_epochs < 1):
            raise ValueError(f"HessianEigenvalues needs batch_size, iterations and every_n_epochs >= 1, got "
                             f"{batch_size}, {iterations}, {every_n_epochs}")
        self.num_samples, self.batch_size, self.method = num_samples, batch_size, method
        self.iterations, self.every_n_epochs = iterations, every_n_epochs
        self.at_start, self.at_end, self.seed = at_start, at_end, seed
        self.history: list[tuple[str, dict[str, float]]] = []
        self._shard: Optional[tuple[Tensor, Tensor]] = None

    def measure(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", label: str) -> dict[str, float]:
        """Compute, log and return the statistics now (all ranks must call it)."""
        if self._shard is None:
            x, y = fixed_sample(training_dataset(trainer), self.num_samples, self.seed)
            rank, world = int(trainer.global_rank), int(trainer.world_size)
            self._shard = (x[rank::world], y[rank::world])
        x, y = self._shard
        device = pl_module.device
        batches = [(x[i : i + self.batch_size].to(device), y[i : i + self.batch_size].to(device))
                   for i in range(0, len(x), self.batch_size)]

        def reduce(t: Tensor) -> Tensor:
            if trainer.world_size == 1:
                return t
            return trainer.strategy.reduce(t.clone(), reduce_op="sum")

        with module_mode(pl_module.model, "eval"), torch.inference_mode(False):
            op = DatasetHessian(pl_module.model, batches, reduce=reduce)
            loss, grad = op.loss_and_gradient()
            eig = extreme_eigenvalues(op.hvp, op.dim, self.method, self.iterations, self.seed, device)
        stats = {"max_eig": eig.largest, "min_eig": eig.smallest, "loss": loss,
                 "grad_norm": float(grad.norm()), "matvecs": float(eig.matvecs)}
        self.history.append((label, stats))
        log_scalars(trainer, {f"hessian/{k}": v for k, v in stats.items()})
        return stats

    def on_train_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if self.at_start and not self.history:
            self.measure(trainer, pl_module, "start")

    def on_train_epoch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if self.every_n_epochs is not None and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self.measure(trainer, pl_module, f"epoch{trainer.current_epoch}")

    def on_train_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if self.at_end:
            self.measure(trainer, pl_module, "end")
