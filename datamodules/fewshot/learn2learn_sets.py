"""learn2learn's few-shot data sets with their official train / validation / test class splits.

Mini-ImageNet (pickled caches), CIFAR-FS (class folders learn2learn builds from its zip) and
FC100 (pickles); each pickle is checked by the data-only unpickler before learn2learn loads it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, ClassVar, Optional, Sequence

import torch
from torch.utils.data import Dataset
from torchvision import transforms

from ..errors import DataNotFoundError
from ..safe_pickle import verify_data_pickle
from .episodes import FewShotDataModule, LabelIndex, labels_to_indices

__all__ = ["CIFARFSFewShot", "FC100FewShot", "MiniImageNetFewShot"]


class _Scale255:
    """learn2learn's Mini-ImageNet yields float tensors in [0, 255]; bring them to [0, 1]."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x / 255.0


class _L2LFewShot(FewShotDataModule):
    """learn2learn data sets with official train / validation / test class splits."""

    _modes: ClassVar[dict[str, str]] = {"train": "train", "val": "validation", "test": "test"}
    _pad: ClassVar[int] = 4

    def _augment(self) -> list[Any]:
        return [transforms.RandomCrop(self.image_size, padding=self._pad),
                transforms.ColorJitter(0.4, 0.4, 0.4), transforms.RandomHorizontalFlip()]

    def _eval_transform(self) -> transforms.Compose:
        steps: list[Any] = [transforms.ToTensor()]
        if self.image_size != self.default_image_size:
            steps.append(transforms.Resize(self.image_size, antialias=True))
        return transforms.Compose(steps)

    def _train_transform(self) -> Callable[[Any], torch.Tensor]:
        return transforms.Compose([*self._eval_transform().transforms, *self._augment()])

    def _pickle(self, mode: str) -> Optional[Path]:
        """The file learn2learn unpickles for ``mode`` (None: the data set has none)."""
        return None

    def _l2l_dataset(self, mode: str, transform: Any) -> tuple[Dataset, Sequence[int]]:
        """learn2learn's data set of ``mode`` and its labels."""
        raise NotImplementedError

    def _dataset(self, mode: str, transform: Any) -> tuple[Dataset, Sequence[int]]:
        pickled = self._pickle(mode)
        if pickled is not None and pickled.is_file():
            verify_data_pickle(pickled)  # learn2learn unpickles it with pickle.load: the data-only unpickler first
        return self._l2l_dataset(mode, transform)

    def _data_folder(self) -> Path:
        return self.root

    def prepare_data(self) -> None:
        """Download (and, for CIFAR-FS, unpack) once per node before setup when ``download=True``."""
        if self.download:
            for mode in self._modes.values():
                if not self._present(mode):
                    self._dataset(mode, None)

    def _load(self, split: str, train_transform: bool) -> tuple[Dataset, LabelIndex]:
        transform = self._train_transform() if (train_transform and split == "train") else self._eval_transform()
        if not self.download and not self._present(self._modes[split]):
            raise DataNotFoundError(self.display_name, self._data_folder(), self._how_to_get(),
                                    f"the {self._modes[split]} split is missing")
        self._warn_if_standin(self._data_folder())
        ds, labels = self._dataset(self._modes[split], transform)
        return ds, labels_to_indices(labels)

    def _present(self, mode: str) -> bool:
        pickled = self._pickle(mode)
        return pickled is not None and pickled.is_file()


class MiniImageNetFewShot(_L2LFewShot):
    """Mini-ImageNet (64/16/20 classes, 84x84) via learn2learn's ``MiniImagenet`` pickles.

    Files: ``<data_dir>/mini-imagenet-cache-{train,validation,test}.pkl``.
    """

    name = "mini-imagenet"
    display_name = "Mini-ImageNet"
    default_image_size = 84
    _pad = 8

    def _pickle(self, mode: str) -> Path:
        return self.root / f"mini-imagenet-cache-{mode}.pkl"

    def _eval_transform(self) -> transforms.Compose:
        steps: list[Any] = [_Scale255()]
        if self.image_size != self.default_image_size:
            steps.append(transforms.Resize(self.image_size, antialias=True))
        return transforms.Compose(steps)

    def _l2l_dataset(self, mode: str, transform: Any) -> tuple[Dataset, Sequence[int]]:
        from learn2learn.vision.datasets import MiniImagenet

        ds = MiniImagenet(str(self.root), mode=mode, transform=transform, download=self.download)
        return ds, [int(v) for v in ds.y]


class CIFARFSFewShot(_L2LFewShot):
    """CIFAR-FS (64/16/20 CIFAR-100 classes, 32x32) via learn2learn's ``CIFARFS``.

    Files: ``<data_dir>/cifarfs/processed/{train,val,test}/<class>/*.png`` (learn2learn
    builds them from its downloaded zip).
    """

    name = "cifar-fs"
    display_name = "CIFAR-FS"
    default_image_size = 32

    def _data_folder(self) -> Path:
        return self.root / "cifarfs"

    def _present(self, mode: str) -> bool:
        return (self.root / "cifarfs" / "processed" / ("val" if mode == "validation" else mode)).is_dir()

    def _l2l_dataset(self, mode: str, transform: Any) -> tuple[Dataset, Sequence[int]]:
        from learn2learn.vision.datasets import CIFARFS

        ds = CIFARFS(str(self.root), mode=mode, transform=transform, download=self.download)
        return ds, ds.targets


class FC100FewShot(_L2LFewShot):
    """FC100 (60/20/20 CIFAR-100 classes by super-class, 32x32) via learn2learn's ``FC100``.

    Files: ``<data_dir>/FC100_{train,val,test}.pickle``.
    """

    name = "fc100"
    display_name = "FC100"
    default_image_size = 32

    def _pickle(self, mode: str) -> Path:
        return self.root / f"FC100_{'val' if mode == 'validation' else mode}.pickle"

    def _l2l_dataset(self, mode: str, transform: Any) -> tuple[Dataset, Sequence[int]]:
        from learn2learn.vision.datasets import FC100

        ds = FC100(str(self.root), mode=mode, transform=transform, download=self.download)
        return ds, [int(v) for v in ds.labels]
