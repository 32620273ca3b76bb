"""Omniglot through torchvision's loader: background alphabets to meta-train, evaluation to test."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from lightning_adv.validation import check_int

from .episodes import CachedDataset, FewShotDataModule, LabelIndex, labels_to_indices, split_classes

__all__ = ["OmniglotFewShot"]


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
        (others: see :class:`FewShotDataModule`; the defaults that differ from it are those of the
        authors' MAML code on Omniglot: 5-way 5-shot, 32 tasks a step, 28x28, no augmentation.)
    """

    name = "omniglot"
    display_name = "Omniglot"
    in_channels = 1
    default_image_size = 28

    def __init__(self, *, shots: int = 5, queries: int = 15, tasks_per_batch: int = 32, train_episodes: int = 32000,
                 val_shots: int = 5, val_episodes: int = 200, augment: bool = False, val_classes: int = 100,
                 **kwargs: Any) -> None:
        super().__init__(shots=shots, queries=queries, tasks_per_batch=tasks_per_batch, train_episodes=train_episodes,
                         val_shots=val_shots, val_episodes=val_episodes, augment=augment, **kwargs)
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
            self._cache[background] = (CachedDataset(ds), labels_to_indices(labels))
        data, l2i = self._cache[background]
        if background:
            l2i = split_classes(l2i, self.val_classes, self.seed, split)
        return data, l2i

