"""Lightning datamodules of ``lightning-adv``: image classification data in [0, 1].

Every datamodule yields ``float32`` images in ``[0, 1]`` (no normalisation: models
normalise internally) and ``int64`` labels, splits a validation set off the training set
with a fixed seed, and raises :class:`DataNotFoundError` before training when its data
is missing or cannot be downloaded.

* :class:`DigitsDataModule` -- scikit-learn digits, 1x8x8, no download (quickstart);
* :class:`MNISTDataModule`, :class:`FashionMNISTDataModule` -- 1x28x28 (torchvision);
  Fashion-MNIST also reads Debian's ``dataset-fashion-mnist`` package;
* :class:`CIFAR10DataModule`, :class:`CIFAR100DataModule` -- 3x32x32 (torchvision);
* :class:`LOBSTERDataModule` -- labelled order-book snippets (thesis chapter 3), not images.

:func:`write_cifar_standin` and :func:`write_mnist_standin` write small generated data
sets in the original on-disk formats, for tests and benchmarks without a network
(``standins.py``; the few-shot sets' writers are in ``fewshot_standins.py``).

A subclass declares only the arguments it adds or whose default it changes (MNIST's
``local_source``, the digits' ``test_size`` and ``augment=False``) and passes the rest on with
``**kwargs``; the command line reads the base class' parameters, defaults and docstrings through
it (``--data.help CLASS``; ``--print_config`` lists the subclass' own arguments first).

Modules: ``base.py`` (the base class), ``errors.py``, ``splits.py`` (train/validation views),
``augment.py``, ``sampling.py``, ``standins.py``, one module per data set, and the
episodic few-shot datamodules in the subpackage ``fewshot`` (imported as
``lightning_adv.datamodules.fewshot``).
"""

from .base import ImageClassificationDataModule
from .cifar import CIFAR10DataModule, CIFAR100DataModule
from .digits import DigitsDataModule
from .errors import DataNotFoundError
from .lobster import LOBSTERDataModule
from .mnist import FashionMNISTDataModule, MNISTDataModule
from .splits import TransformedSubset
from .standins import STANDIN_MARKER, StandInDataWarning, read_standin_manifest, write_cifar_standin, write_mnist_standin

__all__ = [
    "CIFAR10DataModule",
    "CIFAR100DataModule",
    "DataNotFoundError",
    "DigitsDataModule",
    "FashionMNISTDataModule",
    "ImageClassificationDataModule",
    "LOBSTERDataModule",
    "MNISTDataModule",
    "STANDIN_MARKER",
    "StandInDataWarning",
    "TransformedSubset",
    "read_standin_manifest",
    "write_cifar_standin",
    "write_mnist_standin",
]
