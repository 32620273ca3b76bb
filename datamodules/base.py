"""Common base for the image-classification datamodules of ``lightning-adv``.

Conventions every datamodule of this package follows:

* an image leaving a dataloader is a ``float32`` tensor of shape :attr:`input_shape`
  with values in ``[0, 1]``. There is **no** mean/std normalisation in the data
  pipeline: models normalise internally, so that attacks work in pixel space;
* a label is an ``int64`` class index in ``[0, num_classes)``;
* the validation set is split off the *training* set (``val_size``, a fraction or an
  absolute count) with a fixed ``seed``; it uses the evaluation transform, never the
  training augmentation;
* data that is missing (``download=False``), that cannot be downloaded, or that cannot
  be read raises one :class:`DataNotFoundError` from :meth:`prepare_data` or
  :meth:`setup`, i.e. before any training step. Its message names the data set, the
  exact directory looked in, and how to get the data.

Subclasses describe one data set through a handful of hooks (:meth:`dataset_dir`,
:meth:`_data_available`, :meth:`_download_data`, :meth:`_load_split`, the two transform
builders, :meth:`_how_to_get`); the splitting (with ``splits.py``), validation of the arguments,
error handling (the error itself is in ``errors.py``) and dataloaders live here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar, Optional, Union

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_warn
from torchdata.stateful_dataloader import StatefulDataLoader
from torch.utils.data import DataLoader, Dataset

from lightning_adv.validation import check_int, check_real

from .augment import AugmentName, MixCollate, MixName, check_mix, check_soft_labels, resolve_augment
from .errors import DATA_ERRORS, DataNotFoundError
from .sampling import shuffle_kwargs
from .splits import Transform, TransformedSubset, split_pool
from .standins import StandInDataWarning, StandInRefusedError, check_standin_allowed

__all__ = ["ImageClassificationDataModule"]

class ImageClassificationDataModule(pl.LightningDataModule):
    """Base class: train/val/test dataloaders of a labelled image data set.

    Args:
        data_dir: root directory of the data (as for torchvision's ``root``).
        batch_size: batch size of the training dataloader.
        eval_batch_size: batch size of the validation and test dataloaders; ``None``
            uses ``batch_size``.
        num_workers: dataloader worker processes (``0`` loads in the main process);
            workers are kept alive between epochs when ``num_workers > 0``.
        val_size: size of the validation split taken off the training set: a fraction
            in ``[0, 1)`` (a float) or an absolute count (an int). ``0`` disables
            validation (``val_dataloader`` then returns no loader).
        seed: seed of the train/validation split (independent of the global seed).
        download: let torchvision download the data when it is not in ``data_dir``
            (needs a network). Without it, missing data raises :class:`DataNotFoundError`.
        augment: training augmentation (training split only): ``"none"``, ``"flips"``,
            ``"crops"`` (zero padding by :attr:`crop_padding`) or ``"flips+crops"``; ``True``
            is the data set's default (:attr:`default_augment`), ``False`` is none
            (``datamodules/augment.py``).
        mix: batch mixing of the training loader (``"none"``, ``"cutmix"``, ``"mixup"``,
            ``"cutmix_or_mixup"``): labels become soft ``(B, num_classes)``; only modules that
            train on soft labels accept it (checked in ``setup('fit')``).
        mix_alpha: ``Beta(mix_alpha, mix_alpha)`` of the mixing weight.
        pin_memory: ``pin_memory`` of the dataloaders.
        drop_last: drop the last incomplete batch of the *training* dataloader
            (evaluation loaders never drop data).

    Attributes (class level): ``name``, ``num_classes``, ``input_shape`` ``(C, H, W)``.
    After :meth:`setup`: ``train_dataset``, ``val_dataset``, ``test_dataset``.
    """

    #: short name of the data set, e.g. ``"cifar10"``.
    name: ClassVar[str] = "image-classification"
    #: human-readable name used in messages, e.g. ``"CIFAR-10"``.
    display_name: ClassVar[str] = "image classification"
    #: number of classes.
    num_classes: ClassVar[int] = 0
    #: shape ``(C, H, W)`` of one image tensor.
    input_shape: ClassVar[tuple[int, int, int]] = (0, 0, 0)
    #: size of the full official training set, used to validate an absolute ``val_size``
    #: early (``None``: only checked against the loaded data in :meth:`setup`).
    full_train_size: ClassVar[Optional[int]] = None
    #: what ``augment=True`` means for this data set (see ``datamodules/augment.py``)
    default_augment: ClassVar[str] = "none"
    #: zero padding of the ``crops`` augmentation, pixels on each side
    crop_padding: ClassVar[int] = 4

    def __init__(
        self,
        data_dir: str = "data",
        batch_size: int = 128,
        eval_batch_size: Optional[int] = None,
        num_workers: int = 0,
        val_size: Union[int, float] = 0.1,
        seed: int = 0,
        download: bool = False,
        augment: Union[bool, AugmentName] = True,
        pin_memory: bool = False,
        drop_last: bool = False,
        mix: MixName = "none",
        mix_alpha: float = 1.0,
    ) -> None:
        super().__init__()
        if not isinstance(data_dir, (str, os.PathLike)) or not str(data_dir):
            raise ValueError(
                f"data_dir={data_dir!r} is invalid: expected a non-empty path string. "
                "Pass the directory that holds (or will hold) the data, e.g. data_dir='data'."
            )
        check_int("batch_size", batch_size, 1, "use a positive batch size such as 128")
        if eval_batch_size is not None:
            check_int("eval_batch_size", eval_batch_size, 1, "use a positive batch size, or None to reuse batch_size")
        check_int("num_workers", num_workers, 0, "use 0 to load in the main process, or a positive count")
        check_int("seed", seed, 0, "use a non-negative integer seed such as 0")
        for flag_name, flag in (
            ("download", download),
            ("pin_memory", pin_memory), ("drop_last", drop_last),
        ):
            if not isinstance(flag, bool):
                raise ValueError(f"{flag_name}={flag!r} is invalid: expected True or False.")
        self._check_val_size(val_size)
        self.augmentation = resolve_augment(augment, self.default_augment)
        check_mix(mix, mix_alpha)

        self.data_dir = str(data_dir)
        self.batch_size = batch_size
        self.eval_batch_size = batch_size if eval_batch_size is None else eval_batch_size
        self.num_workers = num_workers
        self.val_size = val_size
        self.seed = seed
        self.download = download
        self.augment = augment
        self.pin_memory = pin_memory
        self.drop_last = drop_last
        self.mix, self.mix_alpha = mix, float(mix_alpha)

        self.train_dataset: Optional[TransformedSubset] = None
        self.val_dataset: Optional[TransformedSubset] = None
        self.test_dataset: Optional[TransformedSubset] = None
        self._warned_standin = False

    # ------------------------------------------------------------------ validation
    def _check_val_size(self, val_size: Any) -> None:
        fix = "pass a fraction of the training set in [0, 1) such as 0.1, or an integer count such as 5000"
        if isinstance(val_size, float):
            check_real("val_size", val_size, minimum=0.0, maximum=1.0, below_max=True, hint=f"a float is a fraction; {fix}")
            return
        check_int("val_size", val_size, 0, fix)
        limit = self._expected_train_size()
        if limit is not None and val_size >= limit:
            raise ValueError(f"val_size={val_size!r} is invalid: the {self.display_name} training set has {limit} "
                             f"examples and at least one must stay for training; {fix}")

    def _expected_train_size(self) -> Optional[int]:
        """Size of the training pool before the validation split, if known in advance."""
        return self.full_train_size

    def _num_val(self, n_train: int) -> int:
        """Number of validation examples for a training pool of ``n_train`` examples."""
        if isinstance(self.val_size, float):
            n_val = int(round(self.val_size * n_train))
            if self.val_size > 0.0:
                n_val = max(n_val, 1)
        else:
            n_val = int(self.val_size)
        if n_val >= n_train:
            raise ValueError(
                f"val_size={self.val_size!r} is invalid for the data in {self.dataset_dir}: the "
                f"training set there has {n_train} examples and val_size takes {n_val} of them, "
                "leaving none for training. Pass a smaller val_size."
            )
        return n_val

    # ------------------------------------------------------------------ hooks
    @property
    def root(self) -> Path:
        """``data_dir`` as an absolute path."""
        return Path(self.data_dir).expanduser().resolve()

    @property
    def dataset_dir(self) -> Path:
        """The exact directory where the data files are looked for."""
        return self.root

    def _data_available(self) -> bool:
        """Cheap check that the data files are in place (no checksum)."""
        return True

    def _prepare_local(self) -> bool:
        """Put the data in place from a local source; True on success. Default: none."""
        return False

    def _download_data(self) -> None:
        """Download the data into ``data_dir`` (may raise torchvision's errors)."""

    def _how_to_get(self) -> str:
        """Instructions to obtain the data, for :class:`DataNotFoundError`."""
        return f"pass --data.download true on a machine with network access, or put the files in {self.dataset_dir}."

    def _not_found_note(self) -> Optional[str]:
        """Extra detail for the 'data not found' message (e.g. about a local source)."""
        return None

    def _load_split(self, train: bool) -> Dataset:
        """The untransformed training pool (``train=True``) or test set."""
        raise NotImplementedError

    def _build_train_transform(self) -> Optional[Transform]:
        """Transform of the training split (augmentation + conversion to [0,1] tensor)."""
        raise NotImplementedError

    def _build_eval_transform(self) -> Optional[Transform]:
        """Transform of the validation and test splits (conversion only)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ errors
    def _error(self, reason: Optional[str] = None) -> DataNotFoundError:
        return DataNotFoundError(self.display_name, self.dataset_dir, self._how_to_get(), reason)

    def _missing_error(self) -> DataNotFoundError:
        reason = f"the files are missing and download={self.download}"
        note = self._not_found_note()
        if note:
            reason = f"{reason}; {note}"
        return self._error(reason)

    def _warn_standin(self, folder: Path) -> None:
        check_standin_allowed(self.display_name, folder)
        if not self._warned_standin:
            self._warned_standin = True
            rank_zero_warn(
                f"{self.display_name}: using generated STAND-IN data from {folder} (marker file "
                "'.standin' found), not the real data set; results are meaningless for research.",
                category=StandInDataWarning,
            )

    # ------------------------------------------------------------------ Lightning hooks
    def prepare_data(self) -> None:
        """Make sure the data is on disk: local source, then download, else raise.

        Runs on one process per node under DDP. Raises :class:`DataNotFoundError` when
        the data is missing and cannot be obtained.
        """
        if self._data_available() or self._prepare_local():
            return
        if not self.download:
            raise self._missing_error()
        try:
            self._download_data()
        except DataNotFoundError:
            raise
        except DATA_ERRORS as err:
            reason = (
                f"download=True but the download failed ({type(err).__name__}: {str(err).strip()}); "
                "check the network connection, or get the files another way"
            )
            note = self._not_found_note()
            raise self._error(f"{reason}; {note}" if note else reason) from err
        if not self._data_available():
            raise self._error("the download finished but the expected files are still missing")

    def _load(self, train: bool) -> Dataset:
        if not (self._data_available() or self._prepare_local()):
            raise self._missing_error()
        try:
            return self._load_split(train)
        except (DataNotFoundError, StandInRefusedError):
            raise
        except DATA_ERRORS as err:
            raise self._error(
                f"the files are present but could not be read ({type(err).__name__}: {str(err).strip()}); "
                "delete them and get the data again"
            ) from err

    def setup(self, stage: Optional[str] = None) -> None:
        """Load the splits needed for ``stage`` (``fit``/``validate``/``test``; ``None``: all)."""
        need_fit = stage in (None, "fit", "validate")
        need_test = stage in (None, "test")
        if stage == "fit":
            check_soft_labels(getattr(self, "trainer", None), self.mix)
        if need_fit and self.train_dataset is None:
            pool = self._load(train=True)
            n_pool = len(pool)  # type: ignore[arg-type]
            train_indices, val_indices = split_pool(n_pool, self._num_val(n_pool), self.seed)
            self.train_dataset = TransformedSubset(pool, train_indices, self._build_train_transform())
            self.val_dataset = TransformedSubset(pool, val_indices, self._build_eval_transform())
        if need_test and self.test_dataset is None:
            self.test_dataset = TransformedSubset(self._load(train=False), None, self._build_eval_transform())

    def _loader(self, dataset: Optional[Dataset], split: str, train: bool) -> DataLoader:
        if dataset is None:
            stage = "fit" if split in ("train", "val") else "test"
            raise RuntimeError(f"{type(self).__name__}.{split}_dataloader() needs setup('{stage}') to run first.")
        # training: torchdata's StatefulDataLoader, whose position (sampler state, batches served) Lightning
        # saves in every checkpoint, so a resumed run continues mid-epoch with the same batches
        # and the shuffle is a function of (seed, epoch) (datamodules/sampling.py: exact resume at epoch ends)
        loader_cls = StatefulDataLoader if train else DataLoader
        return loader_cls(
            dataset,
            batch_size=self.batch_size if train else self.eval_batch_size,
            **(shuffle_kwargs(dataset, self) if train else {}),  # type: ignore[arg-type]  # map-style: has a len
            drop_last=self.drop_last if train else False,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            collate_fn=MixCollate(self.mix, self.mix_alpha, self.num_classes) if train and self.mix != "none" else None,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled training loader (Lightning swaps in a DistributedSampler under DDP)."""
        return self._loader(self.train_dataset, "train", train=True)

    def val_dataloader(self) -> Union[DataLoader, list[DataLoader]]:
        """Validation loader; an empty list (no validation) when ``val_size`` is 0."""
        if self.val_dataset is not None and len(self.val_dataset) == 0:
            return []
        return self._loader(self.val_dataset, "val", train=False)

    def test_dataloader(self) -> DataLoader:
        """Test loader over the official test split."""
        return self._loader(self.test_dataset, "test", train=False)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(data_dir={self.data_dir!r}, batch_size={self.batch_size}, "
            f"val_size={self.val_size!r}, seed={self.seed}, augment={self.augmentation!r}, mix={self.mix!r})"
        )
