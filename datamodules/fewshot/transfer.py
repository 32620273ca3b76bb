"""All meta-training classes of a few-shot data set as one classification problem (transfer baseline)."""
from __future__ import annotations

from typing import Optional

import lightning.pytorch as pl
import torch
from torchdata.stateful_dataloader import StatefulDataLoader
from torch.utils.data import DataLoader, Dataset

from lightning_adv.validation import check_int

from ..sampling import shuffle_kwargs
from .episodes import FewShotDataModule

__all__ = ["MetaTrainClassification"]


class _Relabel(Dataset):
    def __init__(self, dataset: Dataset, indices: list[int], label_of: dict[int, int]) -> None:
        self.dataset, self.indices, self.label_of = dataset, indices, label_of

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x, y = self.dataset[self.indices[i]]
        return x, self.label_of[int(y)]


class MetaTrainClassification(pl.LightningDataModule):
    """All meta-training classes of a few-shot data set as one classification problem.

    For the transfer-learning baseline (thesis table 5.4): adversarially train a backbone
    (``AdvTraining``, ``arch: r2d2_embedding`` with ``num_classes``) on every
    meta-training class at once, then evaluate it few-shot with
    ``AdversarialQuerying(init_weights=...)``. Labels are the meta-training classes
    renumbered ``0..C-1``; ``val_per_class`` images of each class are held out (seeded).

    Args:
        episodes: the few-shot datamodule whose meta-training split is used.
        batch_size, eval_batch_size: loader batch sizes.
        val_per_class: images per class held out for validation (and test).
        seed: seed of the hold-out.
    """

    def __init__(self, episodes: FewShotDataModule, batch_size: int = 64, eval_batch_size: Optional[int] = None,
                 val_per_class: int = 10, seed: int = 0) -> None:
        super().__init__()
        self.episodes = episodes
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.eval_batch_size = check_int("eval_batch_size", eval_batch_size or batch_size, 1)
        self.val_per_class = check_int("val_per_class", val_per_class, 1)
        self.seed = check_int("seed", seed, 0)
        self.num_classes: Optional[int] = None
        self.train_dataset: Optional[Dataset] = None
        self.val_dataset: Optional[Dataset] = None

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.episodes.input_shape

    def setup(self, stage: Optional[str] = None) -> None:
        if self.train_dataset is not None:
            return
        train_data, l2i = self.episodes._safe_load("train", self.episodes.augment)
        eval_data, _ = self.episodes._safe_load("train", False)
        label_of = {c: i for i, c in enumerate(sorted(l2i))}
        g = torch.Generator().manual_seed(self.seed)
        train_idx, val_idx = [], []
        for c in sorted(l2i):
            idx = list(l2i[c])
            if len(idx) <= self.val_per_class:
                raise ValueError(f"val_per_class={self.val_per_class} leaves no training image of class {c} "
                                 f"({len(idx)} images); lower val_per_class")
            order = torch.randperm(len(idx), generator=g).tolist()
            val_idx += [idx[i] for i in order[:self.val_per_class]]
            train_idx += [idx[i] for i in order[self.val_per_class:]]
        self.num_classes = len(label_of)
        self.train_dataset = _Relabel(train_data, train_idx, label_of)
        self.val_dataset = _Relabel(eval_data, val_idx, label_of)

    def train_dataloader(self) -> DataLoader:
        return StatefulDataLoader(self.train_dataset, batch_size=self.batch_size,
                                  **shuffle_kwargs(self.train_dataset, self),  # type: ignore[arg-type]
                                  num_workers=self.episodes.num_workers)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_dataset, batch_size=self.eval_batch_size,  # type: ignore[arg-type]
                          num_workers=self.episodes.num_workers)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()
