"""Episodes (few-shot tasks) from a labelled data set, through learn2learn's TaskDataset.

:class:`EpisodeDataset` is a map-style data set of episodes: item ``i`` is one N-way
K-shot task ``(support_x, support_y, query_x, query_y)`` drawn with learn2learn's
``MetaDataset``/``TaskDataset`` and the task transforms ``NWays``, ``KShots``,
``LoadData``, ``RemapLabels`` and ``ConsecutiveLabels``. Labels are ``0..ways-1``; the
support holds the first ``shots`` images of each class, the query the rest.

Item ``i`` is drawn from python's ``random`` seeded with ``(seed, i)`` (and, for
training, the number of times ``i`` was drawn before), and the caller's random state is
restored afterwards. So evaluation episodes are fixed by the seed, and under DDP, where
the distributed sampler gives each rank other indices, ranks draw different tasks.
"""
from __future__ import annotations

import random
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..extras import require_fewshot
from ..validation import check_int

__all__ = ["EpisodeDataset", "split_support_query", "check_task_shape"]


def check_task_shape(labels_to_indices: Mapping[int, Sequence[int]], ways: int, shots: int, queries: int,
                     split: str) -> None:
    """Raise a ValueError naming the fix when the split cannot give such tasks."""
    n_classes = len(labels_to_indices)
    if ways > n_classes:
        raise ValueError(f"ways={ways} but the {split} split has only {n_classes} classes; use ways <= {n_classes}")
    smallest = min(len(v) for v in labels_to_indices.values())
    if shots + queries > smallest:
        raise ValueError(
            f"shots + queries = {shots} + {queries} = {shots + queries} images per class, but the {split} split has "
            f"classes with only {smallest} images; lower shots or queries so that shots + queries <= {smallest}")


def split_support_query(x: Tensor, y: Tensor, ways: int, shots: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Split one task (images grouped by any class order) into support and query sets."""
    support, query = [], []
    for c in range(ways):
        idx = (y == c).nonzero(as_tuple=True)[0]
        support.append(idx[:shots])
        query.append(idx[shots:])
    s, q = torch.cat(support), torch.cat(query)
    return x[s], y[s], x[q], y[q]


class EpisodeDataset(Dataset):
    """``num_episodes`` N-way K-shot episodes with ``queries`` query images per class.

    Args:
        dataset: a labelled data set returning ``(image_tensor, label)``.
        labels_to_indices: class label -> indices of its images (spares a full pass).
        ways, shots, queries: the task shape.
        num_episodes: length of the data set (episodes per epoch).
        seed: seed of the episode draws.
        resample: draw a new task each time an index is read again (training); with
            False item ``i`` is always the same task (evaluation).
        split: name used in error messages.
    """

    def __init__(self, dataset: Dataset, labels_to_indices: Mapping[int, Sequence[int]], ways: int, shots: int,
                 queries: int, num_episodes: int, seed: int = 0, resample: bool = False, split: str = "train") -> None:
        for name, value, minimum in (("ways", ways, 2), ("shots", shots, 1), ("queries", queries, 1),
                                     ("episodes", num_episodes, 1)):
            check_int(name, value, minimum, f"the {split} split's {name}")
        require_fewshot("EpisodeDataset")
        from learn2learn.data import MetaDataset, TaskDataset
        from learn2learn.data.transforms import ConsecutiveLabels, KShots, LoadData, NWays, RemapLabels

        l2i = {int(k): list(v) for k, v in labels_to_indices.items()}
        check_task_shape(l2i, ways, shots, queries, split)
        self.meta = MetaDataset(dataset, labels_to_indices=l2i)
        self.taskset = TaskDataset(self.meta, [
            NWays(self.meta, ways), KShots(self.meta, shots + queries), LoadData(self.meta),
            RemapLabels(self.meta), ConsecutiveLabels(self.meta)], num_tasks=-1)
        self.ways, self.shots, self.queries = ways, shots, queries
        self.num_episodes, self.seed, self.resample = num_episodes, seed, resample
        self._draws: dict[int, int] = {}

    def __len__(self) -> int:
        return self.num_episodes

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        draw = self._draws.get(index, 0)
        if self.resample:
            self._draws[index] = draw + 1
        state = random.getstate()
        try:
            random.seed(f"{self.seed}/{index}/{draw}")
            x, y = self.taskset.sample()
        finally:
            random.setstate(state)
        y = torch.as_tensor(y, dtype=torch.long)
        return split_support_query(torch.as_tensor(x, dtype=torch.float32), y, self.ways, self.shots)

    def state_dict(self) -> dict[str, Any]:
        """How often each index was drawn (``resample``): the data loader (torchdata's
        ``StatefulDataLoader``) checkpoints it, so a resumed run draws the same tasks."""
        return {"draws": dict(self._draws)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._draws = {int(k): int(v) for k, v in dict(state.get("draws") or {}).items()}

    def describe(self) -> dict[str, Any]:
        return {"ways": self.ways, "shots": self.shots, "queries": self.queries, "episodes": self.num_episodes}
