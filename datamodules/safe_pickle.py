"""Data is data: pickled data files are read by an unpickler that can build only arrays.

CIFAR's "python version" batches, FC100's and Mini-ImageNet's caches are pickles. Python's
``pickle.load`` runs whatever callable a file names, so a doctored ``data_batch_1`` (its md5
edited into a stand-in manifest, say) would run code on ``fit``. :class:`DataUnpickler` builds
dicts, lists, strings, numbers and numpy arrays only; any other global (``os.system``,
``builtins.eval``, a class of some module) is refused with an error naming the file.

:class:`SafeCIFARLoading` replaces torchvision's CIFAR constructor (which calls
``pickle.load``) by the same steps through :func:`load_data_pickle`; torchvision's md5
checks still run first. :func:`verify_data_pickle` loads a file once this way before a
library (learn2learn's FC100 / Mini-ImageNet) unpickles it.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np
from torchvision.datasets import VisionDataset
from torchvision.datasets.utils import check_integrity

__all__ = ["DataUnpickler", "SafeCIFARLoading", "load_data_pickle", "verify_data_pickle"]

#: the only globals a data pickle may name: what numpy needs to rebuild an ndarray / a scalar, and bytes
ALLOWED_GLOBALS = frozenset({
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("_codecs", "encode"),  # how protocol 2 (written by Python 3) stores bytes: str -> bytes, nothing else
})


class DataUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`ALLOWED_GLOBALS` (numpy arrays), nothing callable else."""

    def __init__(self, file: Any, path: Union[str, os.PathLike], encoding: str = "latin1") -> None:
        super().__init__(file, encoding=encoding)
        self.path = str(path)

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"{self.path} names {module}.{name}: a data file may hold only arrays, lists, dicts and strings, so it "
            f"is refused (a doctored or foreign file); delete it and get the data again")


def load_data_pickle(path: Union[str, os.PathLike], encoding: str = "latin1") -> Any:
    """Unpickle a data file with :class:`DataUnpickler`."""
    with open(path, "rb") as handle:
        return DataUnpickler(handle, path, encoding=encoding).load()


def verify_data_pickle(path: Union[str, os.PathLike]) -> None:
    """Load ``path`` once with :class:`DataUnpickler` (raises on any non-data global), then drop it."""
    load_data_pickle(path)


class SafeCIFARLoading:
    """torchvision's CIFAR constructor and ``_load_meta`` with :func:`load_data_pickle` (mixin in
    front of ``CIFAR10``/``CIFAR100``): the md5 checks, then the batches, as torchvision does."""

    def __init__(self, root: Union[str, Path], train: bool = True, transform: Optional[Callable] = None,
                 target_transform: Optional[Callable] = None, download: bool = False) -> None:
        VisionDataset.__init__(self, root, transform=transform, target_transform=target_transform)
        self.train = train
        if download:
            self.download()  # type: ignore[attr-defined]
        if not self._check_integrity():  # type: ignore[attr-defined]
            raise RuntimeError("Dataset not found or corrupted (md5 mismatch). You can use download=True to download it")
        data: list[np.ndarray] = []
        self.targets: list[int] = []
        for file_name, _ in (self.train_list if train else self.test_list):  # type: ignore[attr-defined]
            entry = load_data_pickle(Path(self.root, self.base_folder, file_name))  # type: ignore[attr-defined]
            data.append(np.asarray(entry["data"], dtype=np.uint8))
            self.targets.extend(int(v) for v in entry["labels" if "labels" in entry else "fine_labels"])
        self.data = np.vstack(data).reshape(-1, 3, 32, 32).transpose((0, 2, 3, 1))
        self._load_meta()

    def _load_meta(self) -> None:
        meta = self.meta  # type: ignore[attr-defined]
        path = Path(self.root, self.base_folder, meta["filename"])  # type: ignore[attr-defined]
        if not check_integrity(str(path), meta["md5"]):
            raise RuntimeError("Dataset metadata file not found or corrupted. You can use download=True to download it")
        self.classes = list(load_data_pickle(path)[meta["key"]])
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
