"""MNIST and Fashion-MNIST datamodules (torchvision's loaders, [0,1] tensors).

Images are ``float32`` ``(1, 28, 28)`` in ``[0, 1]`` (``ToTensor``). By default there is no
training augmentation for these data sets (``augment=True`` means ``"none"`` here), as usual
for MNIST-type adversarial training; ``"flips"``, ``"crops"`` (zero padding 2) or
``"flips+crops"`` can be asked for by name, and ``mix`` gives CutMix / MixUp batches
(``datamodules/augment.py``).

Data location: torchvision's layout. torchvision reads the four *uncompressed* idx files
``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
``t10k-labels-idx1-ubyte`` from ``<data_dir>/<MNIST|FashionMNIST>/raw/`` and, with
``download=False``, only checks that they exist (no checksum).

Local source: ``local_source`` names a folder holding the four original files, gzipped
(``*-ubyte.gz``, as published) or not. When the raw folder lacks files, they are
decompressed from there into the raw folder, each verified against the md5 sum of the
published *uncompressed* content, and written atomically (temporary file + rename, so an
interrupted copy never leaves a truncated file that torchvision would accept). The
content sums are used rather than those of the ``.gz`` files because repackaged copies
are recompressed: Debian's ``dataset-fashion-mnist`` (which installs the files in
``/usr/share/datasets/fashion-mnist``, the default ``local_source`` of
:class:`FashionMNISTDataModule`) ships ``.gz`` files whose bytes differ from the
published archives while their content is identical.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import zlib
from pathlib import Path
from typing import Any, ClassVar, Optional

from torchvision import transforms
from torchvision.datasets import MNIST, FashionMNIST

from .augment import augment_transforms
from .base import ImageClassificationDataModule
from .splits import Transform
from .cleanup import remove_stale
from .standins import read_standin_manifest

__all__ = ["FashionMNISTDataModule", "MNISTDataModule"]

#: md5 sums of the published files after decompression, by torchvision class name.
CONTENT_MD5: dict[str, dict[str, str]] = {
    "MNIST": {
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    },
    "FashionMNIST": {
        "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
        "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
        "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
    },
}

FASHION_MNIST_DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"


class LocalSourceError(Exception):
    """A file of a local source is unusable (checksum mismatch or unreadable)."""


def _copy_verified(source: Path, destination: Path, expected_md5: Optional[str]) -> None:
    """Decompress (if ``.gz``) or copy ``source`` to ``destination``, checking its md5.

    Writes to a temporary file beside ``destination`` and renames it into place only
    after the checksum matched.
    """
    remove_stale(destination.parent, re.escape(f".{destination.name}.") + r"(?P<pid>\d+)\.tmp")  # a killed run's
    tmp = destination.with_name(f".{destination.name}.{os.getpid()}.tmp")
    digest = hashlib.md5(usedforsecurity=False)
    opener = gzip.open if source.suffix == ".gz" else open
    try:
        with opener(source, "rb") as src, open(tmp, "wb") as dst:
            for chunk in iter(lambda: src.read(1 << 20), b""):
                digest.update(chunk)
                dst.write(chunk)
        if expected_md5 is not None and digest.hexdigest() != expected_md5:
            raise LocalSourceError(
                f"{source} does not hold the published data (md5 of its content is "
                f"{digest.hexdigest()}, expected {expected_md5})"
            )
        os.replace(tmp, destination)
    except (OSError, EOFError, zlib.error) as err:
        raise LocalSourceError(f"cannot read {source}: {err}") from err
    finally:
        tmp.unlink(missing_ok=True)


class _MNISTFamilyDataModule(ImageClassificationDataModule):
    """Shared implementation of the MNIST-format datamodules."""

    num_classes = 10
    input_shape = (1, 28, 28)
    full_train_size = 60_000
    crop_padding = 2
    _torchvision_class: ClassVar[type[MNIST]]

    def __init__(self, *, local_source: Optional[str] = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if local_source is not None and (not isinstance(local_source, (str, os.PathLike)) or not str(local_source)):
            raise ValueError(
                f"local_source={local_source!r} is invalid: expected a directory path or None "
                "(None disables the local source)."
            )
        self.local_source = None if local_source is None else str(local_source)
        self._local_note: Optional[str] = None

    @property
    def dataset_dir(self) -> Path:
        """torchvision's raw folder, ``<data_dir>/<MNIST|FashionMNIST>/raw``."""
        return self.root / self._torchvision_class.__name__ / "raw"

    def _raw_names(self) -> list[str]:
        # Exactly what torchvision's MNIST._check_exists looks for: the resource names
        # without their ".gz".
        return [os.path.splitext(os.path.basename(url))[0] for url, _ in self._torchvision_class.resources]

    def _data_available(self) -> bool:
        if all((self.dataset_dir / name).is_file() for name in self._raw_names()):
            return True
        # torchvision still loads the pre-0.9 cache (processed/training.pt, test.pt).
        processed = self.dataset_dir.parent / "processed"
        return all((processed / name).is_file() for name in ("training.pt", "test.pt"))

    def _prepare_local(self) -> bool:
        """Fill the raw folder from ``local_source``; True when the data is then complete."""
        self._local_note = None
        if self.local_source is None:
            return False
        source = Path(self.local_source).expanduser()
        if not source.is_dir():
            self._local_note = f"local_source {source} does not exist"
            return False
        plan: list[tuple[str, Path]] = []
        for name in self._raw_names():
            if (self.dataset_dir / name).is_file():
                continue
            candidates = [source / f"{name}.gz", source / name]
            found = next((path for path in candidates if path.is_file()), None)
            if found is None:
                self._local_note = f"local_source {source} has neither {name}.gz nor {name}"
                return False
            plan.append((name, found))
        expected = CONTENT_MD5.get(self._torchvision_class.__name__, {})
        try:
            self.dataset_dir.mkdir(parents=True, exist_ok=True)
            for name, path in plan:
                _copy_verified(path, self.dataset_dir / name, expected.get(name))
        except (LocalSourceError, OSError) as err:
            self._local_note = f"local_source {source} was not usable: {err}"
            return False
        return self._data_available()

    def _not_found_note(self) -> Optional[str]:
        return self._local_note

    def _download_data(self) -> None:
        self._torchvision_class(str(self.root), train=True, download=True)

    def _how_to_get(self) -> str:
        tv = self._torchvision_class
        names = ", ".join(self._raw_names())
        online = "" if self.download else (
            f"; or run with `--data.download true` on a machine with network access "
            f"(torchvision downloads from {tv.mirrors[0]})"
        )
        return (
            f"put the four uncompressed files ({names}) in {self.dataset_dir}{online}; or point "
            f"`--data.local_source DIR` at a folder holding the original *-ubyte.gz files."
        )

    def _load_split(self, train: bool) -> MNIST:
        if read_standin_manifest(self.dataset_dir.parent) is not None:
            self._warn_standin(self.dataset_dir.parent)
        return self._torchvision_class(str(self.root), train=train, download=False)

    def _build_train_transform(self) -> Transform:
        steps = augment_transforms(self.augmentation, 28, self.crop_padding)
        return transforms.Compose([*steps, transforms.ToTensor()]) if steps else transforms.ToTensor()

    def _build_eval_transform(self) -> Transform:
        return transforms.ToTensor()


class MNISTDataModule(_MNISTFamilyDataModule):
    """MNIST: 60,000 training / 10,000 test grey images 28x28 of digits, 10 classes.

    Args:
        local_source: optional folder with the four original ``*-ubyte.gz`` (or
            uncompressed) files, used to fill ``<data_dir>/MNIST/raw`` without a
            network; ``None`` (default) disables it.
        Others: see :class:`~lightning_adv.datamodules.base.ImageClassificationDataModule`
        (``augment=True`` is ``"none"``: no augmentation for MNIST unless named).
    """

    name = "mnist"
    display_name = "MNIST"
    _torchvision_class = MNIST


class FashionMNISTDataModule(_MNISTFamilyDataModule):
    """Fashion-MNIST: 60,000 training / 10,000 test grey images 28x28 of clothes, 10 classes.

    Args:
        local_source: folder with the four original ``*-ubyte.gz`` files, used to fill
            ``<data_dir>/FashionMNIST/raw`` without a network. Defaults to
            ``/usr/share/datasets/fashion-mnist``, where the Debian/Ubuntu package
            ``dataset-fashion-mnist`` installs them; ``None`` disables it.
        Others: see :class:`~lightning_adv.datamodules.base.ImageClassificationDataModule`
        (``augment=True`` is ``"none"``: no augmentation for Fashion-MNIST unless named).
    """

    name = "fashion_mnist"
    display_name = "Fashion-MNIST"
    _torchvision_class = FashionMNIST

    def __init__(self, *, local_source: Optional[str] = FASHION_MNIST_DEBIAN_DIR, **kwargs: Any) -> None:
        super().__init__(local_source=local_source, **kwargs)

    def _how_to_get(self) -> str:
        return (
            f"`apt-get install dataset-fashion-mnist` (Debian/Ubuntu) installs the original files "
            f"in {FASHION_MNIST_DEBIAN_DIR}, the default `--data.local_source`; or "
            + super()._how_to_get()
        )
