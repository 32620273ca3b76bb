"""The split views of a data set: one loaded pool, a training and a validation view with their transforms."""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import torch
from torch.utils.data import Dataset

__all__ = ["Transform", "TransformedSubset", "split_pool"]

Transform = Callable[[Any], torch.Tensor]


class TransformedSubset(Dataset):
    """A view of ``dataset`` restricted to ``indices`` that applies its own ``transform``.

    Used to give the training and validation splits of one underlying data set
    different transforms without loading the data twice. Items are returned as
    ``(transform(x), int(y))``; the default collate function turns the labels into an
    ``int64`` tensor.

    Args:
        dataset: map-style data set returning ``(x, y)`` pairs (untransformed).
        indices: indices into ``dataset``; ``None`` means all of it.
        transform: applied to ``x``; ``None`` leaves it as it is.
    """

    def __init__(
        self,
        dataset: Dataset,
        indices: Optional[Sequence[int]] = None,
        transform: Optional[Transform] = None,
    ) -> None:
        self.dataset = dataset
        self.indices: Optional[list[int]] = None if indices is None else [int(i) for i in indices]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices) if self.indices is not None else len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Any, int]:
        source_index = self.indices[index] if self.indices is not None else index
        x, y = self.dataset[source_index]
        if self.transform is not None:
            x = self.transform(x)
        return x, int(y)


def split_pool(n_pool: int, n_val: int, seed: int) -> tuple[list[int], list[int]]:
    """Sorted ``(train, validation)`` indices of a pool of ``n_pool`` items: ``n_val`` of them, drawn
    with ``seed`` (a generator of its own, independent of the global seed), validate."""
    order = torch.randperm(n_pool, generator=torch.Generator().manual_seed(seed))
    return sorted(order[n_val:].tolist()), sorted(order[:n_val].tolist())
