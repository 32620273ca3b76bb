"""Per-episode accuracy: mean and 95% confidence interval, reduced over DDP ranks."""
from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

__all__ = ["EpisodeAccuracy", "episode_accuracy"]


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

    def update(self, episode_acc: Tensor) -> None:
        acc = episode_acc.detach().double().flatten()
        self.n += acc.numel()
        self.total += acc.sum()
        self.total_sq += (acc * acc).sum()

    def compute(self) -> tuple[Tensor, Tensor, Tensor]:
        n = self.n.clamp_min(1.0)
        mean = self.total / n
        var = (self.total_sq / n - mean * mean).clamp_min(0.0)
        return mean.float(), (1.96 * var.sqrt() / n.sqrt()).float(), self.n


def episode_accuracy(correct: Tensor, episode: Tensor) -> tuple[float, float, int]:
    """``(mean, ci95, N)`` of per-episode accuracies from per-query results, as :class:`EpisodeAccuracy`.

    ``correct`` (n,) bool/0-1 per query, ``episode`` (n,) the episode id of each query: the
    accuracy of each episode is the mean over its queries; ``mean`` is their mean and ``ci95``
    ``1.96 * std / sqrt(N)`` with the population std over the N episodes. This is how the
    attack suite's per-query records give the thesis' confidence intervals.
    """
    if correct.numel() == 0:
        return 0.0, 0.0, 0
    _, group = torch.unique(episode, return_inverse=True)
    n = int(group.max()) + 1
    hits = torch.zeros(n, dtype=torch.float64).index_add_(0, group, correct.double())
    counts = torch.zeros(n, dtype=torch.float64).index_add_(0, group, torch.ones_like(correct, dtype=torch.float64))
    acc = hits / counts
    return float(acc.mean()), float(1.96 * acc.std(unbiased=False) / n ** 0.5), n
