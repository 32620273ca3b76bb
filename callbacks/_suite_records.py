"""What the suite callbacks share: example indices, attack units per test batch, DDP gathering.

:class:`AttackSuiteEvaluation` and :class:`RobustnessReport` both feed
:class:`lightning_adv.attacks.AttackSuite` from ``trainer.test`` batches. Three things must be
identical in both, so they live here:

* :class:`TestExampleIndex` -- the index of every test example in its data set, read from the
  (non-shuffled) test loader's batch sampler, so records of all ranks can be de-duplicated
  (Lightning's ``DistributedSampler`` pads the test set with repeats);
* :func:`attack_units` -- what one batch gives the suite: the module itself on ``(x, y)``, or,
  for a few-shot module, one learner adapted on each task's clean support set with its query set;
* :func:`gather_records` -- concatenate the per-batch records, gather them over the DDP ranks and
  keep one record per example index.
"""
from __future__ import annotations

import warnings
from typing import Any, NamedTuple, Optional

import lightning.pytorch as pl
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import RandomSampler

from lightning_adv.attacks import attack_grad_context, concat_records, dedup_records, is_few_shot
from lightning_adv.attacks.pgd import _as_normal

__all__ = ["AttackUnit", "TestExampleIndex", "attack_units", "gather_records", "LOADER_STRIDE"]

LOADER_STRIDE = 1 << 40  # index offset between test dataloaders / ranks (few-shot, fallbacks)
Records = dict[str, Tensor]


class AttackUnit(NamedTuple):
    """One call of ``AttackSuite.run_batch``: the model to attack, its inputs, labels, example keys."""

    model: Any
    x: Tensor
    y: Tensor
    index: Tensor
    mode_module: Optional[nn.Module]


class TestExampleIndex:
    """Maps ``(dataloader_idx, batch_idx)`` to the indices of the batch's examples in the test set.

    ``owner`` names the callback in the warning for a shuffled loader under DDP (indices then
    fall back to positions per rank, and padded duplicates cannot be removed).
    """

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self._batch_indices: dict[int, Optional[list[list[int]]]] = {}
        self._seen: dict[int, int] = {}

    def reset(self, trainer: pl.Trainer) -> None:
        """Read the batch samplers of ``trainer.test_dataloaders`` (call at test epoch start)."""
        self._seen, self._batch_indices = {}, {}
        loaders = trainer.test_dataloaders
        if loaders is None:
            loaders = []
        elif not isinstance(loaders, (list, tuple)):
            loaders = [loaders]
        for i, dl in enumerate(loaders):
            bs = getattr(dl, "batch_sampler", None)
            sampler = getattr(bs, "sampler", None)
            if bs is None or isinstance(sampler, RandomSampler):
                self._batch_indices[i] = None  # not reproducible: fall back to positions
                if trainer.world_size > 1:
                    warnings.warn(f"{self.owner} cannot recover example indices of a shuffled or iterable "
                                  "test loader; padded duplicates of DistributedSampler cannot be removed")
            else:
                self._batch_indices[i] = [list(b) for b in bs]

    def __call__(self, trainer: pl.Trainer, batch_idx: int, dataloader_idx: int, size: int) -> Tensor:
        known = self._batch_indices.get(dataloader_idx)
        if known is not None and batch_idx < len(known) and len(known[batch_idx]) == size:
            idx = torch.tensor(known[batch_idx], dtype=torch.long)
        else:
            start = self._seen.get(dataloader_idx, 0)
            idx = torch.arange(start, start + size) + trainer.global_rank * (LOADER_STRIDE // 1024)
        self._seen[dataloader_idx] = self._seen.get(dataloader_idx, 0) + size
        return idx + dataloader_idx * LOADER_STRIDE


def attack_units(trainer: pl.Trainer, pl_module: Any, batch: Any, batch_idx: int, dataloader_idx: int,
                 index: TestExampleIndex) -> list[AttackUnit]:
    """The suite's inputs for one test batch.

    A classifier: the module on the batch. A few-shot module (``episodes``/``adapted_learner``):
    per task the learner adapted on the clean support set, attacked on the query set only.
    """
    if not is_few_shot(pl_module):
        x, y = batch[0], batch[1]
        return [AttackUnit(pl_module, x, y, index(trainer, batch_idx, dataloader_idx, int(y.shape[0])), pl_module)]
    units = []
    for task, (sx, sy, qx, qy) in enumerate(pl_module.episodes(batch)):
        # adaptation may need autograd (MAML's inner loop, a differentiable solver head), and
        # its outputs must be normal tensors: the attacks backpropagate through them
        with attack_grad_context():
            learner = pl_module.adapted_learner(_as_normal(sx), _as_normal(sy))
        # one key per (rank, batch, task, query): tasks are sampled per rank, nothing to de-duplicate
        base = ((trainer.global_rank * 100_000 + batch_idx) * 1_000 + task) * 10_000
        keys = torch.arange(qy.shape[0]) + base + dataloader_idx * LOADER_STRIDE
        units.append(AttackUnit(learner, qx, qy, keys, learner))
    return units


def gather_records(trainer: pl.Trainer, parts: list[Records]) -> Records:
    """All ranks' records of one suite, one record per example index (every rank must call it)."""
    local = concat_records(parts)
    if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
        gathered: list[Any] = [None] * trainer.world_size
        dist.all_gather_object(gathered, local)
        records = concat_records([g for g in gathered if g])
    else:
        records = local
    return dedup_records(records)
