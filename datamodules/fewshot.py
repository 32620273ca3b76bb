"""Episodic few-shot datamodules: Omniglot, Mini-ImageNet, CIFAR-FS, FC100, class-folder trees.

A batch is ``tasks_per_batch`` tasks stacked: ``(support_x, support_y, query_x, query_y)``
of shapes ``(T, ways*shots, C, H, W)``, ``(T, ways*shots)``, ``(T, ways*queries, C, H, W)``,
``(T, ways*queries)``; images in [0, 1], labels ``0..ways-1``. Tasks are drawn with
learn2learn's ``TaskDataset`` (:class:`lightning_adv.meta.EpisodeDataset`); validation
and test episodes are fixed by ``seed``; under DDP every rank draws other episodes
(the distributed sampler splits the episode indices) and metrics aggregate them all.

Data (real loaders; ``download=True`` where there is a network, a local root otherwise):

* :class:`OmniglotFewShot`: torchvision's ``Omniglot``; meta-train on the background
  alphabets (``val_classes`` characters held out for validation), test on the
  evaluation alphabets. 28x28 grey by default (the authors' MAML code).
* :class:`ClassFolderFewShot`: any tree whose leaf folders are classes (e.g.
  ``alphabet/character/*.png``), given as folders or ``.zip`` files: one tree for
  meta-training (minus ``val_classes``), another held out for testing. Reads the minimal
  Omniglot splits vendored in ``datamodules/assets/omniglot`` offline.
* :class:`MiniImageNetFewShot`, :class:`CIFARFSFewShot`, :class:`FC100FewShot`:
  learn2learn's data sets with their official train/validation/test class splits.

Augmentation (training only, ``augment=True``) as the authors: Mini-ImageNet
``RandomCrop(84, pad 8)``, CIFAR-FS/FC100 ``RandomCrop(32, pad 4)``, both with
``ColorJitter(0.4, 0.4, 0.4)`` and horizontal flips; Omniglot none.
Impossible task shapes (more ways than classes, shots + queries above the images per
class) raise a ``ValueError`` in ``setup``.
"""
from __future__ import annotations

import os
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any, Callable, ClassVar, Optional, Sequence

import lightning.pytorch as pl
import torch
from PIL import Image
from torchdata.stateful_dataloader import StatefulDataLoader
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from lightning_adv.extras import require_fewshot
from lightning_adv.meta import EpisodeDataset
from lightning_adv.validation import check_int

from .base import DataNotFoundError, StandInDataWarning, check_standin_allowed
from .cleanup import remove_stale
from .safe_pickle import verify_data_pickle
from .sampling import shuffle_kwargs
from .standins import STANDIN_MARKER

#: the repository root: relative class-folder paths that do not exist from the working directory are
#: looked up here (configs/aq_omniglot_minimal.yaml names datamodules/assets/omniglot/...)
_REPO_ROOT = Path(__file__).resolve().parents[1]

__all__ = [
    "FewShotDataModule", "OmniglotFewShot", "ClassFolderFewShot", "MiniImageNetFewShot", "CIFARFSFewShot",
    "FC100FewShot", "ImageFolderTree", "MetaTrainClassification",
]

LabelIndex = dict[int, list[int]]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


def _labels_to_indices(labels: Sequence[int]) -> LabelIndex:
    out: LabelIndex = {}
    for i, y in enumerate(labels):
        out.setdefault(int(y), []).append(i)
    return out


class _Cached(Dataset):
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


class _Scale255:
    """learn2learn's Mini-ImageNet yields float tensors in [0, 255]; bring them to [0, 1]."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x / 255.0


class FewShotDataModule(pl.LightningDataModule):
    """Base class of the episodic datamodules.

    Args:
        data_dir: root of the data.
        ways: classes per task (training and evaluation unless ``test_ways`` is set).
        shots, queries: support and query images per class of a training task (authors:
            15 and 6).
        tasks_per_batch: tasks per training step (authors: 8).
        train_episodes: training tasks per epoch (authors: 8000 = 1000 steps of 8).
        val_shots, test_shots: support images per class at validation / test (authors:
            1 at validation; 1 or 5 at test).
        test_ways: ways at validation and test (None: ``ways``).
        test_queries: query images per class at validation and test (authors: 15).
        val_episodes, test_episodes: number of episodes (authors: 2000 and 1000); 0
            validation episodes disables validation.
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
            import warnings

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


def _split_classes(l2i: LabelIndex, val_classes: int, seed: int, split: str) -> LabelIndex:
    """Deterministically hold ``val_classes`` classes of ``l2i`` out for validation."""
    labels = sorted(l2i)
    if val_classes >= len(labels):
        raise ValueError(f"val_classes={val_classes} leaves no training classes (the meta-training split has "
                         f"{len(labels)}); use val_classes < {len(labels)}")
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed)).tolist()
    val = {labels[i] for i in order[:val_classes]}
    return {k: v for k, v in l2i.items() if (k in val) == (split == "val")}


# ---------------------------------------------------------------------- Omniglot (torchvision)
class _Omniglot:
    """torchvision ``Omniglot`` accepting an extracted tree without the archive (offline)."""

    @staticmethod
    def make(root: str, background: bool, transform: Any, download: bool) -> Any:  # a torchvision Omniglot
        from torchvision.datasets import Omniglot

        class LocalOmniglot(Omniglot):
            def _check_integrity(self) -> bool:
                folder = Path(self.root) / self._get_target_folder()
                return super()._check_integrity() or (folder.is_dir() and any(folder.iterdir()))

        return LocalOmniglot(root, background=background, transform=transform, download=download)


class OmniglotFewShot(FewShotDataModule):
    """Omniglot through torchvision: background alphabets to meta-train, evaluation to test.

    Args:
        val_classes: background characters held out for validation (seeded split).
        (others: see :class:`FewShotDataModule`; defaults 5-way, 28x28, no augmentation.)
    """

    name = "omniglot"
    display_name = "Omniglot"
    in_channels = 1
    default_image_size = 28

    def __init__(self, data_dir: str = "data", ways: int = 5, shots: int = 5, queries: int = 15,
                 tasks_per_batch: int = 32, train_episodes: int = 32000, val_shots: int = 5, test_shots: int = 5,
                 test_ways: Optional[int] = None, test_queries: int = 15, val_episodes: int = 200,
                 test_episodes: int = 1000, eval_tasks_per_batch: int = 1, seed: int = 0, augment: bool = False,
                 download: bool = False, num_workers: int = 0, image_size: Optional[int] = None,
                 val_classes: int = 100) -> None:
        super().__init__(data_dir, ways, shots, queries, tasks_per_batch, train_episodes, val_shots, test_shots,
                         test_ways, test_queries, val_episodes, test_episodes, eval_tasks_per_batch, seed, augment,
                         download, num_workers, image_size)
        self.val_classes = check_int("val_classes", val_classes, 1)
        self._cache: dict[bool, tuple[Dataset, LabelIndex]] = {}

    def _how_to_get(self) -> str:
        return (f"run with --data.download true on a machine with a network (torchvision downloads "
                f"images_background.zip and images_evaluation.zip into {self.root}/omniglot-py), or copy the "
                f"extracted folders images_background/ and images_evaluation/ there")

    def prepare_data(self) -> None:
        """Download once per node (before setup) when ``download=True``."""
        if self.download:
            for background in (True, False):
                _Omniglot.make(str(self.root), background, None, True)

    def _load(self, split: str, train_transform: bool) -> tuple[Dataset, LabelIndex]:
        background = split != "test"
        if background not in self._cache:
            ds = _Omniglot.make(str(self.root), background, self._eval_transform(), self.download)
            self._warn_if_standin(Path(ds.root))
            labels = [c for _, c in ds._flat_character_images]
            self._cache[background] = (_Cached(ds), _labels_to_indices(labels))
        data, l2i = self._cache[background]
        if background:
            l2i = _split_classes(l2i, self.val_classes, self.seed, split)
        return data, l2i


# ---------------------------------------------------------------------- class-folder trees
class ImageFolderTree(Dataset):
    """Images of a folder tree whose leaf folders are the classes (sorted paths).

    ``alphabet/character/*.png`` gives one class per character. Images are opened in
    grey (``in_channels=1``) or RGB and passed to ``transform``.
    """

    def __init__(self, root: Path, in_channels: int, transform: Callable[[Any], torch.Tensor]) -> None:
        self.root, self.mode, self.transform = root, "L" if in_channels == 1 else "RGB", transform
        self.samples: list[tuple[Path, int]] = []
        classes = sorted({p.parent for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES})
        for label, folder in enumerate(classes):
            for img in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
                self.samples.append((img, label))
        if not self.samples:
            raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found under {root}")
        self.labels = [y for _, y in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        try:
            with Image.open(path) as img:
                return self.transform(img.convert(self.mode)), label
        except (OSError, SyntaxError) as err:  # truncated or not an image: name the file
            raise ValueError(f"{path}: unreadable image ({type(err).__name__}: {err}); delete or replace the file "
                             f"(and its extracted folder's '.extracted' marker to re-extract)") from err


class ClassFolderFewShot(FewShotDataModule):
    """Few-shot tasks from two class-folder trees (folders or ``.zip`` archives).

    Args:
        train_path: the meta-training tree (``val_classes`` of its classes validate).
        test_path: the held-out tree (meta-test).
        data_dir: where ``.zip`` trees are extracted (once).
        in_channels: 1 (grey, Omniglot) or 3 (RGB).
        val_classes: classes of ``train_path`` held out for validation.
        (others: see :class:`FewShotDataModule`; default image size 28.)
    """

    name = "class-folder"
    display_name = "class-folder tree"
    default_image_size = 28

    def __init__(self, train_path: str, test_path: str, data_dir: str = "data/class_folder", in_channels: int = 1,
                 ways: int = 5, shots: int = 5, queries: int = 15, tasks_per_batch: int = 8,
                 train_episodes: int = 800, val_shots: int = 5, test_shots: int = 5,
                 test_ways: Optional[int] = None, test_queries: int = 15, val_episodes: int = 100,
                 test_episodes: int = 400, eval_tasks_per_batch: int = 1, seed: int = 0, augment: bool = False,
                 num_workers: int = 0, image_size: Optional[int] = None, val_classes: int = 16) -> None:
        super().__init__(data_dir, ways, shots, queries, tasks_per_batch, train_episodes, val_shots, test_shots,
                         test_ways, test_queries, val_episodes, test_episodes, eval_tasks_per_batch, seed, augment,
                         False, num_workers, image_size)
        if in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 (grey) or 3 (RGB), got in_channels={in_channels}")
        self.in_channels = in_channels  # type: ignore[misc]
        self.train_path, self.test_path = str(train_path), str(test_path)
        self.val_classes = check_int("val_classes", val_classes, 1)
        self._trees: dict[str, tuple[Dataset, LabelIndex]] = {}

    def _how_to_get(self) -> str:
        return (f"give train_path and test_path as folders (leaf folders = classes) or .zip files of such trees, "
                f"e.g. datamodules/assets/omniglot/images_background_small1.zip (got {self.train_path}, {self.test_path})")

    def prepare_data(self) -> None:
        """Extract ``.zip`` trees once (Lightning runs this on one process per node, before setup)."""
        self._tree(self.train_path)
        self._tree(self.test_path)

    def _tree(self, path_str: str) -> Path:
        path = Path(path_str).expanduser()
        if not path.exists() and not path.is_absolute() and (_REPO_ROOT / path).exists():
            path = _REPO_ROOT / path  # a repo-relative path (the vendored Omniglot splits) run from elsewhere
        if not path.exists():
            raise DataNotFoundError(self.display_name, path.resolve(), self._how_to_get(), "path does not exist")
        if path.is_dir():
            return path
        if path.suffix.lower() != ".zip":
            raise ValueError(f"{path} is neither a folder nor a .zip archive of a class-folder tree")
        target = self.root / path.stem
        done = target / ".extracted"
        if not done.exists():
            remove_stale(target.parent, re.escape(target.name) + r"\.partial(?P<pid>\d+)")  # a killed earlier run
            partial = target.with_name(target.name + f".partial{os.getpid()}")
            try:
                with zipfile.ZipFile(path) as archive:
                    archive.extractall(partial)
            except BaseException:
                shutil.rmtree(partial, ignore_errors=True)
                raise
            if not done.exists():  # another process may have finished first
                if target.exists():
                    shutil.rmtree(target)
                partial.rename(target)
                done.write_text(str(path.resolve()))
            else:
                shutil.rmtree(partial)
        return target

    def _load(self, split: str, train_transform: bool) -> tuple[Dataset, LabelIndex]:
        key = self.test_path if split == "test" else self.train_path
        if key not in self._trees:
            tree = ImageFolderTree(self._tree(key), self.in_channels, self._eval_transform())
            self._trees[key] = (_Cached(tree), _labels_to_indices(tree.labels))
        data, l2i = self._trees[key]
        if split != "test":
            l2i = _split_classes(l2i, self.val_classes, self.seed, split)
        return data, l2i


# ---------------------------------------------------------------------- learn2learn data sets
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

    def _dataset(self, mode: str, transform: Any) -> tuple[Dataset, Sequence[int]]:
        raise NotImplementedError

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
        return ds, _labels_to_indices(labels)

    def _present(self, mode: str) -> bool:
        raise NotImplementedError


class MiniImageNetFewShot(_L2LFewShot):
    """Mini-ImageNet (64/16/20 classes, 84x84) via learn2learn's ``MiniImagenet`` pickles.

    Files: ``<data_dir>/mini-imagenet-cache-{train,validation,test}.pkl``.
    """

    name = "mini-imagenet"
    display_name = "Mini-ImageNet"
    default_image_size = 84
    _pad = 8

    def _present(self, mode: str) -> bool:
        return (self.root / f"mini-imagenet-cache-{mode}.pkl").is_file()

    def _eval_transform(self) -> Callable[[Any], torch.Tensor]:
        steps: list[Any] = [_Scale255()]
        if self.image_size != self.default_image_size:
            steps.append(transforms.Resize(self.image_size, antialias=True))
        return transforms.Compose(steps)

    def _dataset(self, mode: str, transform: Any) -> tuple[Dataset, Sequence[int]]:
        from learn2learn.vision.datasets import MiniImagenet

        cache = self.root / f"mini-imagenet-cache-{mode}.pkl"
        if cache.is_file():
            verify_data_pickle(cache)  # learn2learn unpickles it with pickle.load
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

    def _dataset(self, mode: str, transform: Any) -> tuple[Dataset, Sequence[int]]:
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

    def _present(self, mode: str) -> bool:
        return (self.root / f"FC100_{'val' if mode == 'validation' else mode}.pickle").is_file()

    def _dataset(self, mode: str, transform: Any) -> tuple[Dataset, Sequence[int]]:
        from learn2learn.vision.datasets import FC100

        cache = self.root / f"FC100_{'val' if mode == 'validation' else mode}.pickle"
        if cache.is_file():
            verify_data_pickle(cache)  # learn2learn unpickles it with pickle.load
        ds = FC100(str(self.root), mode=mode, transform=transform, download=self.download)
        return ds, [int(v) for v in ds.labels]




# ---------------------------------------------------------------------- transfer-learning baseline
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
