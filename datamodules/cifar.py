"""CIFAR-10 and CIFAR-100 datamodules (torchvision's loaders, [0,1] tensors).

Training augmentation (``augment=True``, i.e. ``"flips+crops"``): ``RandomCrop(32, padding=4)`` +
``RandomHorizontalFlip()``, as in the thesis; ``"flips"``, ``"crops"`` or ``"none"`` keep one or
neither (thesis table 4.14); evaluation: ``ToTensor()`` only. ``mix``: CutMix / MixUp batches
(``datamodules/augment.py``).

Data location: torchvision's layout, ``<data_dir>/cifar-10-batches-py/`` and
``<data_dir>/cifar-100-python/`` (the extracted "python version" archives).

Integrity: torchvision checks every file against the md5 sums of the published data.
A folder written by :func:`lightning_adv.datamodules.standins.write_cifar_standin` carries a
``.standin`` marker listing the md5 sums of its generated files; for such a folder the
dataset is built through a small subclass of torchvision's class whose file lists carry
those sums instead, so torchvision's own ``_check_integrity`` still verifies every file
(against the marker). A stand-in is used only when asked for (``LIGHTNING_ADV_ALLOW_STANDIN=1``,
set by the tests), with a :class:`~lightning_adv.datamodules.standins.StandInDataWarning`. Without the marker,
the real published sums apply unchanged. Either way the batches are read by a data-only
unpickler (``datamodules/safe_pickle.py``): a doctored batch cannot run code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Mapping

from torchvision import transforms
from torchvision.datasets import CIFAR10, CIFAR100

from .augment import augment_transforms
from .base import ImageClassificationDataModule
from .splits import Transform
from .safe_pickle import SafeCIFARLoading
from .standins import read_standin_manifest

__all__ = ["CIFAR10DataModule", "CIFAR100DataModule"]


class _StandInChecksums:
    """Mixin for torchvision's CIFAR classes: verify files against stand-in md5 sums.

    torchvision reads the expected sums from ``train_list``, ``test_list`` and ``meta``
    (class attributes); this sets instance attributes of the same names, with the sums
    from the stand-in marker, before torchvision's ``__init__`` runs.
    """

    def __init__(self, root: str, *, checksums: Mapping[str, str], **kwargs: Any) -> None:
        cls: Any = type(self)  # a torchvision CIFAR subclass: the class attributes below are its own

        def expected(filename: str) -> str:
            if filename not in checksums:
                raise KeyError(f"stand-in marker has no md5 sum for '{filename}'")
            return str(checksums[filename])

        self.train_list = [[name, expected(name)] for name, _ in cls.train_list]
        self.test_list = [[name, expected(name)] for name, _ in cls.test_list]
        meta = dict(cls.meta)
        meta["md5"] = expected(meta["filename"])
        self.meta = meta
        super().__init__(root, **kwargs)  # type: ignore[call-arg]


class SafeCIFAR10(SafeCIFARLoading, CIFAR10):
    """torchvision ``CIFAR10`` whose batches are read by the data-only unpickler."""


class SafeCIFAR100(SafeCIFARLoading, CIFAR100):
    """torchvision ``CIFAR100`` whose batches are read by the data-only unpickler."""


class _StandInCIFAR10(_StandInChecksums, SafeCIFAR10):
    """torchvision ``CIFAR10`` checked against the md5 sums of a stand-in marker."""


class _StandInCIFAR100(_StandInChecksums, SafeCIFAR100):
    """torchvision ``CIFAR100`` checked against the md5 sums of a stand-in marker."""


class _CIFARDataModule(ImageClassificationDataModule):
    """Shared implementation of the two CIFAR datamodules."""

    input_shape = (3, 32, 32)
    full_train_size = 50_000
    default_augment = "flips+crops"
    crop_padding = 4
    _torchvision_class: ClassVar[type[CIFAR10]]
    _standin_class: ClassVar[type[CIFAR10]]
    _safe_class: ClassVar[type[CIFAR10]]
    _archive_size: ClassVar[str]

    @property
    def dataset_dir(self) -> Path:
        """``<data_dir>/cifar-10-batches-py`` or ``<data_dir>/cifar-100-python``."""
        return self.root / self._torchvision_class.base_folder

    def _expected_files(self) -> list[str]:
        tv = self._torchvision_class
        return [name for name, _ in tv.train_list + tv.test_list] + [tv.meta["filename"]]

    def _data_available(self) -> bool:
        return all((self.dataset_dir / name).is_file() for name in self._expected_files())

    def _download_data(self) -> None:
        # torchvision downloads and extracts the archive (skipped if already verified).
        self._torchvision_class(str(self.root), train=True, download=True)

    def _how_to_get(self) -> str:
        tv = self._torchvision_class
        return (
            f"run with `--data.download true` (download=True) on a machine with network access: "
            f"torchvision downloads {tv.filename} ({self._archive_size}) from {tv.url} into {self.root} "
            f"and extracts it. Offline, copy the extracted folder '{tv.base_folder}/' (files "
            f"{', '.join(self._expected_files())}) to {self.root}. For tests, "
            f"lightning_adv.datamodules.write_cifar_standin('{self.root}', '{self.name}') writes generated stand-in data."
        )

    def _load_split(self, train: bool) -> CIFAR10:
        manifest = read_standin_manifest(self.dataset_dir)
        if manifest is None:
            return self._safe_class(str(self.root), train=train, download=False)
        self._warn_standin(self.dataset_dir)
        return self._standin_class(str(self.root), checksums=manifest["md5"], train=train, download=False)

    def _build_train_transform(self) -> Transform:
        steps = augment_transforms(self.augmentation, 32, self.crop_padding)
        return transforms.Compose([*steps, transforms.ToTensor()]) if steps else transforms.ToTensor()

    def _build_eval_transform(self) -> Transform:
        return transforms.ToTensor()


class CIFAR10DataModule(_CIFARDataModule):
    """CIFAR-10: 50,000 training / 10,000 test RGB images 32x32, 10 classes.

    See :class:`~lightning_adv.datamodules.base.ImageClassificationDataModule` for the arguments.
    Images are ``float32`` ``(3, 32, 32)`` in ``[0, 1]``; training images are randomly
    cropped (padding 4) and flipped when ``augment=True`` (``"flips+crops"``; see ``augment``).
    """

    name = "cifar10"
    display_name = "CIFAR-10"
    num_classes = 10
    _torchvision_class = CIFAR10
    _standin_class = _StandInCIFAR10
    _safe_class = SafeCIFAR10
    _archive_size = "about 163 MB"


class CIFAR100DataModule(_CIFARDataModule):
    """CIFAR-100: 50,000 training / 10,000 test RGB images 32x32, 100 (fine) classes.

    See :class:`~lightning_adv.datamodules.base.ImageClassificationDataModule` for the arguments.
    Labels are the 100 fine labels. Same transforms as :class:`CIFAR10DataModule`.
    """

    name = "cifar100"
    display_name = "CIFAR-100"
    num_classes = 100
    _torchvision_class = CIFAR100
    _standin_class = _StandInCIFAR100
    _safe_class = SafeCIFAR100
    _archive_size = "about 161 MB"
