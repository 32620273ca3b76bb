"""What the analysis callbacks share: a fixed sample of the training set, scalar and figure logging."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import lightning.pytorch as pl
import torch
from torch import Tensor
from torch.utils.data import Dataset

from lightning_adv.logging_utils import log_figure as _log_figure
from lightning_adv.logging_utils import run_dir

__all__ = ["training_dataset", "fixed_sample", "log_scalars", "log_figure", "output_dir", "world"]


def training_dataset(trainer: "pl.Trainer") -> Dataset:
    """The training set *without* augmentation where the datamodule allows it.

    A datamodule of this project keeps ``train_dataset`` (a ``TransformedSubset``) and an
    eval transform builder: the same images with the eval transform are used, so that an
    analysis does not see random crops. Otherwise the training dataloader's data set.
    """
    dm = getattr(trainer, "datamodule", None)
    ds = getattr(dm, "train_dataset", None) if dm is not None else None
    if ds is not None:
        build = getattr(dm, "_build_eval_transform", None)
        if build is not None and hasattr(ds, "dataset") and hasattr(ds, "transform"):
            return type(ds)(ds.dataset, ds.indices, build())
        return ds
    loader = getattr(trainer, "train_dataloader", None)
    if loader is not None and hasattr(loader, "dataset"):
        return loader.dataset
    raise ValueError(
        "this callback needs the training data: fit with a datamodule (data: in the config), "
        "or call it after the train dataloader is loaded"
    )


def fixed_sample(dataset: Dataset, num_samples: Optional[int], seed: int) -> tuple[Tensor, Tensor]:
    """``num_samples`` examples drawn once with ``seed`` (all of them, in order, for None), stacked."""
    n = len(dataset)  # type: ignore[arg-type]
    if num_samples is None or num_samples >= n:
        idx = list(range(n))
    else:
        idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:num_samples].tolist()
    xs, ys = zip(*(dataset[i] for i in idx))
    return torch.stack([torch.as_tensor(x) for x in xs]), torch.as_tensor(ys, dtype=torch.long)


def world(trainer: "pl.Trainer") -> tuple[int, int]:
    """(rank, world size)."""
    return int(trainer.global_rank), int(trainer.world_size)


def output_dir(trainer: "pl.Trainer", name: str, override: Optional[str]) -> Path:
    """``override``, else ``<run dir>/<name>`` (:func:`lightning_adv.logging_utils.run_dir`: the logger's run)."""
    if override:
        return Path(override)
    return Path(run_dir(trainer)) / name


def epoch_due(trainer: "pl.Trainer", every_n_epochs: int) -> bool:
    """At the end of the current epoch: every ``every_n_epochs`` epochs, and after the last one."""
    done = trainer.current_epoch + 1
    return done % every_n_epochs == 0 or done == trainer.max_epochs


def log_scalars(trainer: "pl.Trainer", metrics: dict[str, float], step: Optional[int] = None) -> None:
    """Write scalars to every logger (rank zero) at ``step`` (default: the global step)."""
    if trainer.global_rank != 0:
        return
    step = trainer.global_step if step is None else step
    for logger in trainer.loggers:
        logger.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)


def log_figure(trainer: "pl.Trainer", tag: str, figure: Any, step: Optional[int] = None) -> None:
    """Log a matplotlib figure to every logger (rank zero; TensorBoard, CSV, W&B, MLflow) and close it."""
    _log_figure(trainer, tag, figure, step=trainer.global_step if step is None else step)
