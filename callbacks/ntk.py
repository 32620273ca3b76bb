"""Empirical NTK snapshots during training (thesis section 6.4, figures 6.1-6.3)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from lightning_adv.analysis import (empirical_ntk, kernel_correlation, kernel_relative_change, parameter_norm,
                                    trainable_parameters)

from ._analysis_common import epoch_due, fixed_sample, log_figure, log_scalars, output_dir, training_dataset

__all__ = ["NTKSnapshot", "load_ntk_snapshots"]


def _flat_params(module: torch.nn.Module) -> Tensor:
    return torch.cat([p.detach().reshape(-1).double().cpu() for p in trainable_parameters(module).values()])


def load_ntk_snapshots(directory: str | Path) -> list[dict[str, Any]]:
    """The snapshots an :class:`NTKSnapshot` saved in ``directory``, by epoch (``weights_only`` load)."""
    files = sorted(Path(directory).glob("ntk_epoch*.pt"))
    return [torch.load(f, map_location="cpu", weights_only=True) for f in files]


class NTKSnapshot(Callback):
    """The empirical NTK of ``pl_module.model`` on a fixed sample, at the start and every k epochs.

    ``num_samples`` training images (without augmentation) are drawn once with ``seed``;
    the ``(N, N, C, C)`` kernel (eq. 6.5) is computed by :func:`~lightning_adv.analysis.empirical_ntk`
    in eval mode with the BatchNorm buffers (layer by layer for Linear/Conv2d/BatchNorm nets). Logged: ``ntk/norm``,
    ``ntk/rel_change`` (``||K_t - K_0|| / ||K_0||``), ``ntk/correlation`` (with ``K_0``), ``ntk/param_norm``,
    ``ntk/param_rel_change`` (``||theta_t - theta_0|| / ||theta_0||``) and a figure of the
    three curves of figure 6.2. Each snapshot is saved (rank zero) as
    ``<save_dir>/ntk_epoch{E:03d}.pt`` (epoch -1 = initialisation, file ``ntk_epoch-01``)
    with the kernel and these statistics, for the width sweep
    (``scripts/ntk_width_sweep.py``).

    Args:
        num_samples: images in the sample (thesis: 25).
        every_n_epochs: snapshot period (and always after the last epoch).
        seed: seed of the sample.
        save_dir: where to save (default ``<log_dir>/ntk``).
        per_tensor: for the torch.func fallback, Jacobians one parameter tensor at a time (less memory);
            the layer-by-layer way always works a layer (a slice of a convolution) at a time.
    """

    def __init__(self, num_samples: int = 25, every_n_epochs: int = 1, seed: int = 0,
                 save_dir: Optional[str] = None, per_tensor: bool = False) -> None:
        if num_samples < 2:
            raise ValueError(f"NTKSnapshot.num_samples must be >= 2, got num_samples={num_samples}; the thesis uses 25")
        if every_n_epochs < 1:
            raise ValueError(f"NTKSnapshot.every_n_epochs must be >= 1, got every_n_epochs={every_n_epochs}")
        self.num_samples, self.every_n_epochs, self.seed = num_samples, every_n_epochs, seed
        self.save_dir, self.per_tensor = save_dir, per_tensor
        self.history: list[dict[str, float]] = []
        self._x: Optional[Tensor] = None
        self._k0: Optional[Tensor] = None
        self._theta0: Optional[Tensor] = None

    def _snapshot(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", epoch: int) -> None:
        if trainer.global_rank != 0:
            return  # the sample and the parameters are the same on every rank
        model = pl_module.model
        if self._x is None:
            self._x, _ = fixed_sample(training_dataset(trainer), self.num_samples, self.seed)
        kernel = empirical_ntk(model, self._x.to(pl_module.device), per_tensor=self.per_tensor).cpu()
        theta = _flat_params(model)
        if self._k0 is None:
            self._k0, self._theta0 = kernel, theta
        assert self._theta0 is not None
        stats = {
            "epoch": float(epoch),
            "norm": float(kernel.double().norm()),
            "rel_change": kernel_relative_change(self._k0, kernel),
            "correlation": kernel_correlation(self._k0, kernel),
            "param_norm": parameter_norm(model),
            "param_rel_change": float((theta - self._theta0).norm() / self._theta0.norm()),
            "num_params": float(theta.numel()),
        }
        self.history.append(stats)
        log_scalars(trainer, {f"ntk/{k}": v for k, v in stats.items() if k not in ("epoch", "num_params")})
        directory = output_dir(trainer, "ntk", self.save_dir)
        directory.mkdir(parents=True, exist_ok=True)
        torch.save({"kernel": kernel, **stats}, directory / f"ntk_epoch{epoch:03d}.pt")
        log_figure(trainer, "ntk", self._figure())

    def _figure(self) -> Any:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        epochs = [h["epoch"] + 1 for h in self.history]
        fig, axes = plt.subplots(1, 3, figsize=(10, 3))
        for ax, key, label in zip(axes, ("norm", "correlation", "param_norm"),
                                  ("NTK norm", "correlation with initial NTK", "parameter norm")):
            ax.plot(epochs, [h[key] for h in self.history], "o-")
            ax.set_xlabel("epoch")
            ax.set_title(label)
        fig.tight_layout()
        return fig

    def on_train_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if not self.history:
            self._snapshot(trainer, pl_module, -1)

    def on_train_epoch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if epoch_due(trainer, self.every_n_epochs):
            self._snapshot(trainer, pl_module, trainer.current_epoch)
