"""scikit-learn's digits as a datamodule: the quickstart's data (no download, seconds).

1797 grey images 8x8 of handwritten digits (10 classes) ship inside scikit-learn
(``sklearn.datasets.load_digits``). Pixel values ``0..16`` are divided by 16, giving
``float32`` tensors ``(1, 8, 8)`` in ``[0, 1]``; everything is held in memory.

Splits: a stratified train/test split with ``test_size`` (default 0.25: 1347 train /
450 test) that is **fixed** (random state 0, independent of ``seed``), so runs with
different seeds are evaluated on the same test images; the validation split is then
taken off the training part with ``seed`` like in every other datamodule.

Augmentation: off by default (``augment=False``). With ``augment=True`` (``"crops"``) the
training images are shifted by up to one pixel (``RandomCrop(8, padding=1)``, zero fill,
which is the background value); ``"flips"`` and ``"flips+crops"`` can be named too, and
``mix`` gives CutMix / MixUp batches (``datamodules/augment.py``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
from torch.utils.data import TensorDataset
from torchvision import transforms

from .augment import AugmentName, augment_transforms
from .base import ImageClassificationDataModule
from .splits import Transform
from lightning_adv.validation import check_real

__all__ = ["DigitsDataModule"]

#: random state of the fixed train/test split.
TEST_SPLIT_SEED = 0


class DigitsDataModule(ImageClassificationDataModule):
    """scikit-learn digits: 1797 grey 8x8 images, 10 classes, no download.

    Args:
        test_size: fraction of the 1797 images in the (stratified, fixed) test split,
            in ``(0, 1)``.
        augment: ``True`` = ``"crops"``: random shift by up to one pixel of the training images
            (default off); or ``"flips"`` / ``"flips+crops"`` / ``"none"``.
        data_dir, download: accepted for a uniform interface; unused (the data ships
            with scikit-learn).
        Others: see :class:`~lightning_adv.datamodules.base.ImageClassificationDataModule`.
    """

    name = "digits"
    display_name = "scikit-learn digits"
    num_classes = 10
    input_shape = (1, 8, 8)
    default_augment = "crops"
    crop_padding = 1
    #: number of images in the data set.
    total_size = 1797

    def __init__(self, *, test_size: float = 0.25, augment: Union[bool, AugmentName] = False, **kwargs: Any) -> None:
        check_real("test_size", test_size, positive=True, maximum=1.0, below_max=True,
                   hint=f"the fraction of the {self.total_size} images used for testing, such as 0.25")
        # Set before the base class validates val_size against the training size.
        self.test_size = float(test_size)
        super().__init__(augment=augment, **kwargs)
        self._splits: Optional[dict[str, TensorDataset]] = None

    def _expected_train_size(self) -> int:
        # scikit-learn rounds the test part up.
        return self.total_size - math.ceil(self.test_size * self.total_size)

    @property
    def dataset_dir(self) -> Path:
        """scikit-learn's bundled data folder (the data is not read from ``data_dir``)."""
        import sklearn.datasets

        return Path(sklearn.datasets.__file__).parent / "data"

    def _how_to_get(self) -> str:
        return "install scikit-learn (`pip install scikit-learn`); the digits ship with it."

    def _load_split(self, train: bool) -> TensorDataset:
        if self._splits is None:
            from sklearn.datasets import load_digits
            from sklearn.model_selection import train_test_split

            digits = load_digits()
            images = torch.from_numpy((digits.images / 16.0).astype(np.float32)).unsqueeze(1)
            labels = torch.from_numpy(digits.target.astype(np.int64))
            train_idx, test_idx = train_test_split(
                np.arange(len(labels)),
                test_size=self.test_size,
                stratify=digits.target,
                random_state=TEST_SPLIT_SEED,
            )
            train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)
            self._splits = {
                "train": TensorDataset(images[train_idx], labels[train_idx]),
                "test": TensorDataset(images[test_idx], labels[test_idx]),
            }
            # Kept for inspection: positions in load_digits() order.
            self.train_pool_indices = train_idx.tolist()
            self.test_indices = test_idx.tolist()
        return self._splits["train" if train else "test"]

    def _build_train_transform(self) -> Optional[Transform]:
        steps = augment_transforms(self.augmentation, 8, self.crop_padding)
        return transforms.Compose(steps) if steps else None

    def _build_eval_transform(self) -> Optional[Transform]:
        return None
