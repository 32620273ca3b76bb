"""Generated stand-in data sets in the exact on-disk formats torchvision reads.

CIFAR-10/100 and MNIST cannot be downloaded on machines without a network, yet the
loading code must be exercised for real. The writers below produce small synthetic
data sets *in the original file formats* so that torchvision's own parsing code reads
them, through the ordinary datamodules:

* :func:`write_cifar_standin` writes the Python-pickle batches of the "python version"
  of CIFAR (``cifar-10-batches-py/data_batch_1..5, test_batch, batches.meta`` or
  ``cifar-100-python/train, test, meta``): dicts with ``data`` (``uint8``, one row of
  ``3*32*32`` values per image, channel-major like the originals), ``labels`` /
  ``fine_labels`` (+ ``coarse_labels``), ``filenames`` and ``batch_label``;
* :func:`write_mnist_standin` writes the four uncompressed idx files
  (``train-images-idx3-ubyte`` ...) into ``<root>/<dataset>/raw/``.

Each writer finally writes a marker file :data:`STANDIN_MARKER` (``.standin``, JSON)
into the data set folder, recording how the data was generated and the md5 sum of every
file. torchvision verifies the CIFAR files against the md5 sums of the *real* data, which
stand-ins cannot match; the CIFAR datamodules therefore check the files against the md5
sums in the marker instead when it is present (and warn that stand-in data is in use),
while real data keeps being checked against torchvision's published sums.
torchvision's MNIST loader only checks that the raw files exist, so no such switch is
needed there; the marker only triggers the warning.

Reading a stand-in is refused unless asked for (:func:`check_standin_allowed`: the environment
variable :data:`ALLOW_STANDIN_ENV` set to ``1``, as the tests do) and then warned about with
:class:`StandInDataWarning`: a marker file alone must not make a folder trusted.

The images are "learnable-ish": each class has its own mean colour (CIFAR) or bright
blob position (MNIST), plus per-pixel noise, so a few training steps lower the loss.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import struct
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from lightning_adv.validation import check_int

__all__ = [
    "ALLOW_STANDIN_ENV",
    "STANDIN_MARKER",
    "StandInDataWarning",
    "StandInRefusedError",
    "check_standin_allowed",
    "read_standin_manifest",
    "write_cifar_standin",
    "write_mnist_standin",
]

#: name of the marker file written into the folder of a generated data set.
STANDIN_MARKER = ".standin"

PathLike = Union[str, os.PathLike]

_CIFAR10_NAMES = [
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
]


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _prepare_folder(folder: Path, expected: list[str]) -> None:
    """Create ``folder``; refuse to overwrite files of a real data set in it."""
    if folder.is_dir() and not (folder / STANDIN_MARKER).exists():
        clash = [name for name in expected if (folder / name).exists()]
        if clash:
            raise FileExistsError(
                f"{folder} already holds {', '.join(clash)} without a '{STANDIN_MARKER}' marker: "
                "that looks like real data, refusing to overwrite it with stand-ins."
            )
    folder.mkdir(parents=True, exist_ok=True)
    # Remove a previous marker first: a half-written stand-in must not look complete.
    (folder / STANDIN_MARKER).unlink(missing_ok=True)


def _write_marker(folder: Path, files: list[Path], info: dict[str, Any]) -> None:
    manifest = dict(info)
    manifest["generator"] = "lightning_adv.datamodules.standins"
    manifest["md5"] = {str(path.relative_to(folder)): _md5(path) for path in files}
    tmp = folder / (STANDIN_MARKER + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    os.replace(tmp, folder / STANDIN_MARKER)


def read_standin_manifest(folder: PathLike) -> Optional[dict[str, Any]]:
    """The parsed marker of a stand-in data set in ``folder``, or ``None`` if absent.

    Raises:
        ValueError: the marker exists but is not a valid manifest.
    """
    marker = Path(folder) / STANDIN_MARKER
    if not marker.is_file():
        return None
    try:
        manifest = json.loads(marker.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"stand-in marker {marker} is unreadable: {err}") from err
    if not isinstance(manifest, dict) or not isinstance(manifest.get("md5"), dict):
        raise ValueError(f"stand-in marker {marker} has no 'md5' table; regenerate the stand-in data.")
    return manifest


#: stand-in data (a folder with a '.standin' marker) is used only when this variable is "1"
ALLOW_STANDIN_ENV = "LIGHTNING_ADV_ALLOW_STANDIN"


class StandInRefusedError(ValueError):
    """A folder of generated stand-in data met without ``LIGHTNING_ADV_ALLOW_STANDIN=1``."""


def check_standin_allowed(display_name: str, folder: Path) -> None:
    """Refuse generated stand-in data unless asked for: a marker file alone must not make a folder
    trusted (its manifest's md5 sums replace the published ones)."""
    if os.environ.get(ALLOW_STANDIN_ENV) != "1":
        raise StandInRefusedError(f"{display_name}: {folder} holds generated STAND-IN data (marker '.standin'), not the real "
                         f"data set; set {ALLOW_STANDIN_ENV}=1 to use it on purpose (the tests do), or point data_dir "
                         f"at the real data")


class StandInDataWarning(UserWarning):
    """Emitted when a datamodule reads generated stand-in data instead of the real set."""


def _class_balanced_labels(rng: np.random.Generator, n: int, num_classes: int) -> np.ndarray:
    return rng.permutation(np.arange(n) % num_classes)


def _cifar_images(rng: np.random.Generator, palette: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """uint8 images ``(N, 32, 32, 3)`` (HWC): class colour plus a mild gradient and noise."""
    n = len(labels)
    ramp = np.linspace(-20.0, 20.0, 32)[None, :, None, None]  # vertical gradient, all classes
    noise = rng.normal(0.0, 24.0, size=(n, 32, 32, 3))
    images = palette[labels][:, None, None, :] + ramp + noise
    return np.clip(np.rint(images), 0, 255).astype(np.uint8)


def _cifar_rows(images_hwc: np.ndarray) -> np.ndarray:
    """CIFAR's row layout: per image 1024 red, then 1024 green, then 1024 blue bytes."""
    return np.ascontiguousarray(images_hwc.transpose(0, 3, 1, 2).reshape(len(images_hwc), -1))


def _dump(path: Path, obj: dict[str, Any]) -> None:
    # Protocol 2 like the original (Python 2) files; torchvision unpickles with latin1.
    with open(path, "wb") as handle:
        pickle.dump(obj, handle, protocol=2)


def write_cifar_standin(
    root: PathLike,
    dataset: str = "cifar10",
    n_train: int = 500,
    n_test: int = 100,
    seed: int = 0,
) -> Path:
    """Write a small generated CIFAR-10 or CIFAR-100 under ``root``.

    The files are those torchvision's ``CIFAR10``/``CIFAR100`` read with
    ``root=root``: ``<root>/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}``
    or ``<root>/cifar-100-python/{train,test,meta}``, plus the marker ``.standin``.

    Args:
        root: the datamodule's ``data_dir``.
        dataset: ``"cifar10"`` or ``"cifar100"``.
        n_train: number of training images (spread over the 5 CIFAR-10 batches).
        n_test: number of test images.
        seed: seed of the generator; the same arguments give the same files.

    Returns:
        The data set folder that was written.
    """
    check_int("n_train", n_train, 1)
    check_int("n_test", n_test, 1)
    key = dataset.lower().replace("-", "")
    if key not in ("cifar10", "cifar100"):
        raise ValueError(f"dataset={dataset!r} is invalid: expected 'cifar10' or 'cifar100'.")
    num_classes = 10 if key == "cifar10" else 100
    rng = np.random.default_rng(seed)
    palette = rng.integers(40, 216, size=(num_classes, 3)).astype(np.float64)
    train_labels = _class_balanced_labels(rng, n_train, num_classes)
    test_labels = _class_balanced_labels(rng, n_test, num_classes)
    train_rows = _cifar_rows(_cifar_images(rng, palette, train_labels))
    test_rows = _cifar_rows(_cifar_images(rng, palette, test_labels))

    root = Path(root)
    written: list[Path] = []
    if key == "cifar10":
        folder = root / "cifar-10-batches-py"
        names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]
        _prepare_folder(folder, names)
        chunks = np.array_split(np.arange(n_train), 5)
        for batch_number, chunk in enumerate(chunks, start=1):
            path = folder / f"data_batch_{batch_number}"
            _dump(path, {
                "batch_label": f"training batch {batch_number} of 5 (stand-in)",
                "labels": [int(v) for v in train_labels[chunk]],
                "data": train_rows[chunk],
                "filenames": [f"standin_train_{i:06d}.png" for i in chunk],
            })
            written.append(path)
        path = folder / "test_batch"
        _dump(path, {
            "batch_label": "testing batch 1 of 1 (stand-in)",
            "labels": [int(v) for v in test_labels],
            "data": test_rows,
            "filenames": [f"standin_test_{i:06d}.png" for i in range(n_test)],
        })
        written.append(path)
        path = folder / "batches.meta"
        _dump(path, {
            "num_cases_per_batch": int(len(chunks[0])),
            "label_names": list(_CIFAR10_NAMES),
            "num_vis": 3 * 32 * 32,
        })
        written.append(path)
    else:
        folder = root / "cifar-100-python"
        _prepare_folder(folder, ["train", "test", "meta"])
        coarse_of = np.arange(num_classes) // 5  # 20 super-classes of 5 classes each
        for split, labels, rows in (("train", train_labels, train_rows), ("test", test_labels, test_rows)):
            path = folder / split
            _dump(path, {
                "batch_label": f"{split}ing batch 1 of 1 (stand-in)",
                "fine_labels": [int(v) for v in labels],
                "coarse_labels": [int(v) for v in coarse_of[labels]],
                "data": rows,
                "filenames": [f"standin_{split}_{i:06d}.png" for i in range(len(labels))],
            })
            written.append(path)
        path = folder / "meta"
        _dump(path, {
            "fine_label_names": [f"standin_class_{i:02d}" for i in range(num_classes)],
            "coarse_label_names": [f"standin_superclass_{i:02d}" for i in range(20)],
        })
        written.append(path)

    _write_marker(folder, written, {
        "dataset": key, "n_train": n_train, "n_test": n_test, "seed": seed,
    })
    return folder


def _write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array in the idx format (big-endian header: magic, then dims)."""
    if array.dtype != np.uint8:
        raise TypeError(f"idx writer expects uint8 data, got {array.dtype}")
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with open(path, "wb") as handle:
        handle.write(header)
        handle.write(np.ascontiguousarray(array).tobytes())


def _mnist_images(rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
    """uint8 images ``(N, 28, 28)``: a bright blob whose position depends on the class."""
    angles = 2.0 * np.pi * labels / 10.0
    centre_y = 14.0 + 8.0 * np.sin(angles)
    centre_x = 14.0 + 8.0 * np.cos(angles)
    grid = np.arange(28, dtype=np.float64)
    dist2 = (grid[None, :, None] - centre_y[:, None, None]) ** 2 + (grid[None, None, :] - centre_x[:, None, None]) ** 2
    blob = 230.0 * np.exp(-dist2 / (2.0 * 3.0**2))
    noise = rng.normal(0.0, 20.0, size=blob.shape)
    return np.clip(np.rint(blob + noise), 0, 255).astype(np.uint8)


def write_mnist_standin(
    root: PathLike,
    dataset: str = "MNIST",
    n_train: int = 600,
    n_test: int = 100,
    seed: int = 0,
) -> Path:
    """Write a small generated MNIST or Fashion-MNIST under ``root``.

    Writes the four uncompressed idx files torchvision's ``MNIST``/``FashionMNIST`` read
    with ``root=root`` into ``<root>/<dataset>/raw/`` and the marker
    ``<root>/<dataset>/.standin``.

    Args:
        root: the datamodule's ``data_dir``.
        dataset: ``"MNIST"`` or ``"FashionMNIST"`` (torchvision's folder names).
        n_train: number of training images.
        n_test: number of test images.
        seed: seed of the generator.

    Returns:
        The data set folder ``<root>/<dataset>``.
    """
    check_int("n_train", n_train, 1)
    check_int("n_test", n_test, 1)
    if dataset not in ("MNIST", "FashionMNIST"):
        raise ValueError(f"dataset={dataset!r} is invalid: expected 'MNIST' or 'FashionMNIST'.")
    rng = np.random.default_rng(seed)
    folder = Path(root) / dataset
    raw = folder / "raw"
    names = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    _prepare_folder(folder, [f"raw/{name}" for name in names])
    raw.mkdir(exist_ok=True)
    written: list[Path] = []
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = _class_balanced_labels(rng, n, 10).astype(np.uint8)
        images = _mnist_images(rng, labels)
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            path = raw / f"{prefix}-{kind}-ubyte"
            _write_idx(path, array)
            written.append(path)
    _write_marker(folder, written, {
        "dataset": dataset, "n_train": n_train, "n_test": n_test, "seed": seed,
    })
    return folder
