"""Generated stand-ins of the few-shot data sets, in the on-disk formats their loaders read.

Mini-ImageNet, CIFAR-FS, FC100 and Omniglot cannot be downloaded without a network, yet
the real loaders (learn2learn's ``MiniImagenet``, ``CIFARFS``, ``FC100``; torchvision's
``Omniglot``) must be exercised. :func:`write_fewshot_standin` writes small generated
sets in their formats:

* Mini-ImageNet: ``mini-imagenet-cache-{train,validation,test}.pkl``, each a pickled
  dict ``{"image_data": uint8 (N, 84, 84, 3), "class_dict": {class_name: [indices]}}``;
* CIFAR-FS: ``cifarfs/processed/{train,val,test}/<class>/<i>.png`` (32x32 RGB), the
  folders learn2learn builds from its zip;
* FC100: ``FC100_{train,val,test}.pickle``, each ``{"data": uint8 (N, 32, 32, 3),
  "labels": [int]}``;
* Omniglot: ``omniglot-py/images_{background,evaluation}/<alphabet>/<character>/<i>.png``
  (105x105 grey), torchvision's extracted layout.

A ``.standin`` marker (see :mod:`lightning_adv.datamodules.standins`) is written next to the files, so
the datamodules warn that stand-in data is in use. Each class has its own pattern plus
noise, so few-shot tasks are learnable.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image

from .standins import STANDIN_MARKER, _write_marker

__all__ = ["write_fewshot_standin", "FEWSHOT_STANDINS"]

FEWSHOT_STANDINS = ("mini-imagenet", "cifar-fs", "fc100", "omniglot")


def _images(rng: np.random.Generator, n_classes: int, per_class: int, size: int, channels: int) -> np.ndarray:
    """uint8 ``(n_classes, per_class, size, size, channels)``: class colour + stripes + noise."""
    base = rng.integers(40, 216, size=(n_classes, 1, 1, 1, channels)).astype(np.float64)
    freq = rng.integers(1, 6, size=(n_classes, 1, 1, 1, 1))
    grid = np.arange(size)[None, None, :, None, None]
    stripes = 40.0 * np.sin(2 * np.pi * freq * grid / size)
    noise = rng.normal(0.0, 20.0, size=(n_classes, per_class, size, size, channels))
    return np.clip(np.rint(base + stripes + noise), 0, 255).astype(np.uint8)


def write_fewshot_standin(root: Union[str, Path], dataset: str, classes: tuple[int, int, int] = (8, 6, 6),
                          per_class: int = 6, seed: int = 0) -> Path:
    """Write a generated stand-in of ``dataset`` under ``root`` (the datamodule's data_dir).

    Args:
        dataset: one of ``mini-imagenet``, ``cifar-fs``, ``fc100``, ``omniglot``.
        classes: classes of the train / validation / test splits (Omniglot: background
            classes = train + validation, evaluation classes = test).
        per_class: images per class.
    Returns:
        The folder holding the marker.
    """
    if dataset not in FEWSHOT_STANDINS:
        raise ValueError(f"dataset={dataset!r} is not one of {FEWSHOT_STANDINS}")
    rng = np.random.default_rng(seed)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if dataset == "mini-imagenet":
        folder = root
        for mode, n in zip(("train", "validation", "test"), classes):
            imgs = _images(rng, n, per_class, 84, 3).reshape(n * per_class, 84, 84, 3)
            class_dict = {f"n{mode[:2]}{c:05d}": list(range(c * per_class, (c + 1) * per_class)) for c in range(n)}
            path = folder / f"mini-imagenet-cache-{mode}.pkl"
            with open(path, "wb") as f:
                pickle.dump({"image_data": imgs, "class_dict": class_dict}, f)
            written.append(path)
    elif dataset == "fc100":
        folder = root
        for mode, n in zip(("train", "val", "test"), classes):
            imgs = _images(rng, n, per_class, 32, 3).reshape(n * per_class, 32, 32, 3)
            labels = [c for c in range(n) for _ in range(per_class)]
            path = folder / f"FC100_{mode}.pickle"
            with open(path, "wb") as f:
                pickle.dump({"data": imgs, "labels": labels}, f, protocol=2)
            written.append(path)
    elif dataset == "cifar-fs":
        folder = root / "cifarfs"
        for mode, n in zip(("train", "val", "test"), classes):
            imgs = _images(rng, n, per_class, 32, 3)
            for c in range(n):
                cdir = folder / "processed" / mode / f"{mode}_class_{c:02d}"
                cdir.mkdir(parents=True, exist_ok=True)
                for i in range(per_class):
                    path = cdir / f"{i}.png"
                    Image.fromarray(imgs[c, i]).save(path)
                    written.append(path)
    else:
        folder = root / "omniglot-py"
        for part, n in (("images_background", classes[0] + classes[1]), ("images_evaluation", classes[2])):
            imgs = _images(rng, n, per_class, 105, 1)
            for c in range(n):
                cdir = folder / part / f"Alphabet_{c // 4}" / f"character{c % 4 + 1:02d}"
                cdir.mkdir(parents=True, exist_ok=True)
                for i in range(per_class):
                    path = cdir / f"{c:04d}_{i:02d}.png"
                    Image.fromarray(imgs[c, i, :, :, 0]).save(path)
                    written.append(path)
    (folder / STANDIN_MARKER).unlink(missing_ok=True)
    _write_marker(folder, written, {"dataset": dataset, "classes": list(classes), "per_class": per_class,
                                    "seed": seed})
    return folder
