"""The training sampler: a shuffle that is a function of (seed, epoch), for exact resume.

torchdata's ``StatefulDataLoader`` saves its position in every checkpoint, but with its own
``RandomSampler`` a run resumed from a checkpoint written at the end of an epoch does not
continue like the uninterrupted run: the restored loader serves nothing in the next epoch
(the resumed run silently skipped an epoch) or the rest of the old permutation
(``limit_train_batches``); torchdata issue #1437. :class:`EpochShuffleSampler` draws the
permutation of epoch ``e`` from ``seed + e`` (as ``DistributedSampler`` does), so the order
of any epoch is known without any saved generator state; the loader's position within an
epoch is restored by torchdata skipping that many indices of the same permutation, and
:class:`~lightning_adv.callbacks.ResumeState` drops the position at epoch boundaries.
Lightning calls ``set_epoch`` on the sampler before every epoch (also on resume). It is a
``RandomSampler``, so under DDP Lightning still swaps in its ``DistributedSampler``.
"""
from __future__ import annotations

from typing import Iterator, Optional, Sized

import torch
from torch.utils.data import RandomSampler

__all__ = ["EpochShuffleSampler", "current_epoch", "shuffle_kwargs"]


def current_epoch(datamodule: object) -> int:
    """The epoch the attached trainer's next training pass belongs to (restored on resume), else 0."""
    trainer = getattr(datamodule, "trainer", None)
    # the value Lightning's own set_epoch call uses; trainer.current_epoch lags by one while restoring
    return int(trainer.fit_loop.epoch_progress.current.processed) if trainer is not None else 0


class EpochShuffleSampler(RandomSampler):
    """Permutation of ``range(len(data_source))`` drawn from ``seed + epoch``.

    Args:
        data_source: the data set (only its length is used).
        seed: base seed; ``None`` draws one from the global torch generator (so
            ``seed_everything`` decides it, as for torch's own ``RandomSampler``).
        epoch: the epoch the loader starts in. Lightning creates the training iterator (and
            prefetches from it) before its ``set_epoch`` call of the first epoch, so a loader
            built for a resumed run must start at the trainer's current epoch.
    """

    def __init__(self, data_source: Sized, seed: Optional[int] = None, epoch: int = 0) -> None:
        super().__init__(data_source)
        self.seed = int(torch.empty((), dtype=torch.int64).random_().item()) if seed is None else int(seed)
        self.epoch = int(epoch)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(len(self.data_source), generator=generator).tolist())

    def __len__(self) -> int:
        return len(self.data_source)


def shuffle_kwargs(dataset: Sized, datamodule: object) -> dict:
    """``sampler`` and ``generator`` for a shuffled training ``StatefulDataLoader``.

    The loader gets a generator of its own (seeded with the sampler's seed) because every new
    iterator draws a base seed from the loader's generator, by default the global one: on resume
    Lightning creates the first iterator before the global generator's state is restored, so
    that draw would shift every random number of the resumed run by one.
    """
    sampler = EpochShuffleSampler(dataset, epoch=current_epoch(datamodule))
    return {"sampler": sampler, "generator": torch.Generator().manual_seed(sampler.seed)}
