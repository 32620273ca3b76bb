"""Per-episode accuracy: mean and 95% confidence interval, reduced over DDP ranks."""
from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

__all__ = ["EpisodeAccuracy"]


class EpisodeAccuracy(Metric):
    """Mean of per-episode accuracies with ``1.96 * std / sqrt(N)`` over all N episodes.

    States are sums (count, sum, sum of squares) with ``dist_reduce_fx="sum"``, so under
    DDP the statistics cover the episodes of every rank. ``std`` is the population
    standard deviation of the episode accuracies (as the authors' ``np.std``).
    ``compute()`` returns ``(mean, ci95, n)``.
    """

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("n", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total_sq", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, episode_acc: Tensor) -> None:  # type: ignore[override]
        acc = episode_acc.detach().double().flatten()
        self.n += acc.numel()
        self.total += acc.sum()
        self.total_sq += (acc * acc).sum()

    def compute(self) -> tuple[Tensor, Tensor, Tensor]:  # type: ignore[override]
        n = self.n.clamp_min(1.0)
        mean = self.total / n
        var = (self.total_sq / n - mean * mean).clamp_min(0.0)
        return mean.float(), (1.96 * var.sqrt() / n.sqrt()).float(), self.n
