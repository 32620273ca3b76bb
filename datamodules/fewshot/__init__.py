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

Modules: ``episodes.py`` (the base class and the episode plumbing), ``omniglot.py``,
``folders.py`` (class-folder trees), ``learn2learn_sets.py`` (Mini-ImageNet, CIFAR-FS, FC100),
``transfer.py`` (all meta-training classes as one classification problem);
``datamodules/fewshot_standins.py`` writes stand-ins of each data set in its loader's format.
"""
from .episodes import FewShotDataModule
from .folders import ClassFolderFewShot, ImageFolderTree
from .learn2learn_sets import CIFARFSFewShot, FC100FewShot, MiniImageNetFewShot
from .omniglot import OmniglotFewShot
from .transfer import MetaTrainClassification

__all__ = [
    "FewShotDataModule", "OmniglotFewShot", "ClassFolderFewShot", "MiniImageNetFewShot", "CIFARFSFewShot",
    "FC100FewShot", "ImageFolderTree", "MetaTrainClassification",
]
