"""Few-shot tasks from class-folder trees: leaf folders are classes, given as folders or ``.zip`` files."""
from __future__ import annotations

import os
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any, Callable

import torch
from PIL import Image
from torch.utils.data import Dataset

from lightning_adv.validation import check_int

from ..cleanup import remove_stale
from ..errors import DataNotFoundError
from .episodes import CachedDataset, FewShotDataModule, LabelIndex, labels_to_indices, split_classes

__all__ = ["ClassFolderFewShot", "ImageFolderTree"]

#: the repository root: relative class-folder paths that do not exist from the working directory are
#: looked up here (configs/aq_omniglot_minimal.yaml names datamodules/assets/omniglot/...)
_REPO_ROOT = Path(__file__).resolve().parents[2]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


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
                 *, shots: int = 5, queries: int = 15, train_episodes: int = 800, val_shots: int = 5,
                 val_episodes: int = 100, test_episodes: int = 400, augment: bool = False, val_classes: int = 16,
                 **kwargs: Any) -> None:
        super().__init__(data_dir=data_dir, shots=shots, queries=queries, train_episodes=train_episodes,
                         val_shots=val_shots, val_episodes=val_episodes, test_episodes=test_episodes, augment=augment,
                         download=False, **kwargs)
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
            self._trees[key] = (CachedDataset(tree), labels_to_indices(tree.labels))
        data, l2i = self._trees[key]
        if split != "test":
            l2i = split_classes(l2i, self.val_classes, self.seed, split)
        return data, l2i
