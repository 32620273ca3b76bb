"""The base of the episodic datamodules and its plumbing: arguments, episode sets, loaders.

A subclass describes one data set through :meth:`FewShotDataModule._load` (the images of a
split and their class index) and its transforms; :meth:`FewShotDataModule.setup` turns the
splits into :class:`lightning_adv.meta.EpisodeDataset` s (training episodes drawn anew,
validation and test episodes fixed by ``seed``) and the loaders stack ``tasks_per_batch`` of them.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable, ClassVar, Optional, Sequence

import lightning.pytorch as pl
import torch
from torchdata.stateful_dataloader import StatefulDataLoader
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from lightning_adv.extras import require_fewshot
from lightning_adv.meta import EpisodeDataset
from lightning_adv.validation import check_int

from ..errors import DataNotFoundError
from ..standins import STANDIN_MARKER, StandInDataWarning, check_standin_allowed

__all__ = ["CachedDataset", "FewShotDataModule", "LabelIndex", "labels_to_indices", "split_classes"]

#: class label -> indices of its images in the data set
LabelIndex = dict[int, list[int]]


def labels_to_indices(labels: Sequence[int]) -> LabelIndex:
    """The :data:`LabelIndex` of a data set whose item ``i`` has label ``labels[i]``."""
    out: LabelIndex = {}
    for i, y in enumerate(labels):
        out.setdefault(int(y), []).append(i)
    return out


class CachedDataset(Dataset):
    """Caches the (deterministic) transformed items of a data set in memory."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self.cache: dict[int, Any] = {}

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        if index not in self.cache:
            self.cache[index] = self.dataset[index]
        return self.cache[index]


class FewShotDataModule(pl.LightningDataModule):
    """Base class of the episodic datamodules.

    Args:
        data_dir: root of the data.
        ways: classes per task (training and evaluation unless ``test_ways`` is set).
        shots: support images per class of a training task (authors: 15).
        queries: query images per class of a training task (authors: 6).
        tasks_per_batch: tasks per training step (authors: 8).
        train_episodes: training tasks per epoch (authors: 8000 = 1000 steps of 8).
        val_shots: support images per class at validation (authors: 1).
        test_shots: support images per class at test (authors: 1 or 5).
        test_ways: ways at validation and test (None: ``ways``).
        test_queries: query images per class at validation and test (authors: 15).
        val_episodes: number of validation episodes (authors: 2000); 0 disables validation.
        test_episodes: number of test episodes (authors: 1000).
        eval_tasks_per_batch: tasks per validation/test batch.
        seed: seed of the episodes (validation and test episodes are fixed by it).
        augment: the training augmentation of the data set.
        download: download the data when missing (needs a network).
        num_workers: dataloader worker processes.
        image_size: side length of the images (the data set's native size by default).
    """

    name: ClassVar[str] = "fewshot"
    display_name: ClassVar[str] = "few-shot"
    in_channels: ClassVar[int] = 3
    default_image_size: ClassVar[int] = 84

    def __init__(
        self,
        data_dir: str = "data",
        ways: int = 5,
        shots: int = 15,
        queries: int = 6,
        tasks_per_batch: int = 8,
        train_episodes: int = 8000,
        val_shots: int = 1,
        test_shots: int = 5,
        test_ways: Optional[int] = None,
        test_queries: int = 15,
        val_episodes: int = 2000,
        test_episodes: int = 1000,
        eval_tasks_per_batch: int = 1,
        seed: int = 0,
        augment: bool = True,
        download: bool = False,
        num_workers: int = 0,
        image_size: Optional[int] = None,
    ) -> None:
        super().__init__()
        require_fewshot(type(self).__name__)
        self.data_dir = str(data_dir)
        self.ways = check_int("ways", ways, 2)
        self.test_ways = check_int("test_ways", test_ways if test_ways is not None else ways, 2)
        self.shots = check_int("shots", shots, 1)
        self.queries = check_int("queries", queries, 1)
        self.tasks_per_batch = check_int("tasks_per_batch", tasks_per_batch, 1)
        self.train_episodes = check_int("train_episodes", train_episodes, 1)
        self.val_shots = check_int("val_shots", val_shots, 1)
        self.test_shots = check_int("test_shots", test_shots, 1)
        self.test_queries = check_int("test_queries", test_queries, 1)
        self.val_episodes = check_int("val_episodes", val_episodes, 0)
        self.test_episodes = check_int("test_episodes", test_episodes, 1)
        self.eval_tasks_per_batch = check_int("eval_tasks_per_batch", eval_tasks_per_batch, 1)
        self.seed = check_int("seed", seed, 0)
        self.num_workers = check_int("num_workers", num_workers, 0)
        self.augment, self.download = bool(augment), bool(download)
        self.image_size = check_int("image_size", image_size if image_size is not None else self.default_image_size, 8)
        self.train_set: Optional[EpisodeDataset] = None
        self.val_set: Optional[EpisodeDataset] = None
        self.test_set: Optional[EpisodeDataset] = None

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.in_channels, self.image_size, self.image_size)

    @property
    def root(self) -> Path:
        return Path(self.data_dir).expanduser().resolve()

    # ------------------------------------------------------------------ hooks
    def _load(self, split: str, train_transform: bool) -> tuple[Dataset, LabelIndex]:
        """The images of ``split`` ('train', 'val', 'test') and their class index."""
        raise NotImplementedError

    def _how_to_get(self) -> str:
        return f"pass --data.download true on a machine with a network, or put the files in {self.root}"

    def _eval_transform(self) -> Callable[[Any], torch.Tensor]:
        return transforms.Compose([transforms.Resize(self.image_size), transforms.ToTensor()])

    def _train_transform(self) -> Callable[[Any], torch.Tensor]:
        return self._eval_transform()

    # ------------------------------------------------------------------ setup
    def _safe_load(self, split: str, train_transform: bool) -> tuple[Dataset, LabelIndex]:
        try:
            return self._load(split, train_transform)
        except (DataNotFoundError, ValueError):
            raise
        except (RuntimeError, OSError, EOFError, KeyError, IndexError) as err:
            raise DataNotFoundError(self.display_name, self.root, self._how_to_get(),
                                    f"{type(err).__name__}: {err}") from err

    def _warn_if_standin(self, folder: Path) -> None:
        if (folder / STANDIN_MARKER).exists():
            check_standin_allowed(self.display_name, folder)
            warnings.warn(f"{self.display_name}: reading generated stand-in data from {folder}, not the real data set",
                          StandInDataWarning, stacklevel=3)

    def setup(self, stage: Optional[str] = None) -> None:
        if stage in (None, "fit") and self.train_set is None:
            data, l2i = self._safe_load("train", self.augment)
            self.train_set = EpisodeDataset(data, l2i, self.ways, self.shots, self.queries, self.train_episodes,
                                            seed=self.seed, resample=True, split="train")
        if stage in (None, "fit", "validate") and self.val_set is None and self.val_episodes > 0:
            data, l2i = self._safe_load("val", False)
            self.val_set = EpisodeDataset(data, l2i, self.test_ways, self.val_shots, self.test_queries,
                                          self.val_episodes, seed=self.seed + 1, split="validation")
        if stage in (None, "test") and self.test_set is None:
            data, l2i = self._safe_load("test", False)
            self.test_set = EpisodeDataset(data, l2i, self.test_ways, self.test_shots, self.test_queries,
                                           self.test_episodes, seed=self.seed + 2, split="test")

    def _loader(self, dataset: Optional[EpisodeDataset], batch: int, shuffle: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}: call setup() before asking for a dataloader")
        # training (shuffled): a StatefulDataLoader, whose position Lightning checkpoints (exact resume)
        return (StatefulDataLoader if shuffle else DataLoader)(
            dataset, batch_size=batch, shuffle=shuffle, num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.tasks_per_batch, shuffle=True)

    def val_dataloader(self) -> Any:
        if self.val_episodes == 0:
            return []
        return self._loader(self.val_set, self.eval_tasks_per_batch, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, self.eval_tasks_per_batch, shuffle=False)


def split_classes(l2i: LabelIndex, val_classes: int, seed: int, split: str) -> LabelIndex:
    """Deterministically hold ``val_classes`` classes of ``l2i`` out for validation."""
    labels = sorted(l2i)
    if val_classes >= len(labels):
        raise ValueError(f"val_classes={val_classes} leaves no training classes (the meta-training split has "
                         f"{len(labels)}); use val_classes < {len(labels)}")
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed)).tolist()
    val = {labels[i] for i in order[:val_classes]}
    return {k: v for k, v in l2i.items() if (k in val) == (split == "val")}

