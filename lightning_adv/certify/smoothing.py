"""Randomized smoothing (Cohen, Rosenfeld and Kolter 2019, "Certified adversarial robustness via
randomized smoothing").

The smoothed classifier ``g(x) = argmax_c P(f(x + N(0, sigma^2 I)) = c)`` is certified at ``x``
in the L2 ball of radius ``sigma * Phi^-1(pA)`` whenever the top class has probability at
least ``pA > 1/2``. Both procedures of the paper, vectorised over a batch of examples:

* :func:`predict`: ``n`` noisy samples; the top two counts ``nA, nB``; return the top class
  when a two-sided binomial test of ``nA`` out of ``nA + nB`` at 1/2 has p-value <= ``alpha``,
  else abstain (-1). Wrong with probability at most ``alpha``.
* :func:`certify`: guess the class from ``n0`` samples, count it in ``n`` fresh ones, and
  take the one-sided ``(1 - alpha)`` Clopper-Pearson lower bound ``pA_lower`` of its
  probability (``Beta(alpha; nA, n - nA + 1)`` quantile); abstain when ``pA_lower <= 1/2``,
  else the radius ``sigma * Phi^-1(pA_lower)``.

Noise is added in [0, 1] pixel space (the model normalises inside), without clamping, as
in the paper. Pure functions: ``model`` is any callable from images to logits.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from scipy import stats
from torch import Tensor

from ..validation import check_int, check_real

__all__ = ["ABSTAIN", "SmoothingResult", "check_smoothing", "sample_counts", "clopper_pearson_lower", "predict",
           "certify"]

ABSTAIN = -1


@dataclass
class SmoothingResult:
    """Per example: the predicted class (``ABSTAIN`` = -1) and the certified L2 radius (0 when abstaining)."""

    prediction: Tensor
    radius: Tensor

    def certified_correct(self, y: Tensor, radius: float) -> Tensor:
        """Examples predicted correctly with a certified radius >= ``radius``."""
        return (self.prediction == y.cpu()) & (self.radius >= radius)

    def curve(self, y: Tensor, radii: list[float]) -> list[float]:
        """Certified accuracy at each of ``radii`` (abstentions count as wrong): non-increasing in the radius."""
        return [float(self.certified_correct(y, r).float().mean()) for r in radii]


def check_smoothing(sigma: float, alpha: float, n: int, n0: int = 1, batch_size: int = 1) -> None:
    """The errors of the bad inputs: sigma <= 0, alpha outside (0, 1), n0 > n, counts < 1."""
    check_real("sigma", sigma, positive=True, hint="the noise standard deviation in [0, 1] pixel units, e.g. 0.25")
    check_real("alpha", alpha, positive=True, maximum=1.0, below_max=True, hint="the failure probability, e.g. 0.001")
    for name, v in (("n", n), ("n0", n0), ("batch_size", batch_size)):
        check_int(name, v, 1, "a number of noise samples" if name != "batch_size" else "")
    if n0 > n:
        raise ValueError(f"smoothing: n0={n0} (selection samples) must not exceed n={n} (estimation samples); "
                         "Cohen et al. use n0=100, n=100000")


@torch.no_grad()
def sample_counts(model: Callable[[Tensor], Tensor], x: Tensor, num: int, sigma: float, num_classes: int,
                  batch_size: int = 1000) -> Tensor:
    """Class counts (B, K) of ``model`` on ``num`` Gaussian-noise copies of each example."""
    b = x.shape[0]
    counts = torch.zeros(b, num_classes, dtype=torch.long)
    per = max(1, batch_size // max(b, 1))  # noise copies of each example per forward
    done = 0
    while done < num:
        m = min(per, num - done)
        rep = x.repeat_interleave(m, 0)
        pred = model(rep + sigma * torch.randn_like(rep)).argmax(1).view(b, m).cpu()
        counts.scatter_add_(1, pred, torch.ones_like(pred))
        done += m
    return counts


def clopper_pearson_lower(successes: np.ndarray, n: int, alpha: float) -> np.ndarray:
    """One-sided (1 - alpha) Clopper-Pearson lower confidence bound of a binomial proportion."""
    s = np.asarray(successes, dtype=float)
    return np.where(s > 0, stats.beta.ppf(alpha, np.maximum(s, 1), n - s + 1), 0.0)


def predict(model: Callable[[Tensor], Tensor], x: Tensor, num_classes: int, sigma: float, n: int = 100,
            alpha: float = 0.001, batch_size: int = 1000) -> Tensor:
    """PREDICT of Cohen et al.: the smoothed prediction per example, or ``ABSTAIN``."""
    check_smoothing(sigma, alpha, n, 1, batch_size)
    counts = sample_counts(model, x, n, sigma, num_classes, batch_size)
    top2 = counts.topk(2, dim=1)
    n_a, n_b = top2.values[:, 0].numpy(), top2.values[:, 1].numpy()
    pvals = np.array([stats.binomtest(int(a), int(a + b), 0.5).pvalue if a + b > 0 else 1.0
                      for a, b in zip(n_a, n_b)])
    pred = top2.indices[:, 0].clone()
    pred[torch.from_numpy(pvals > alpha)] = ABSTAIN
    return pred


def certify(model: Callable[[Tensor], Tensor], x: Tensor, num_classes: int, sigma: float, n0: int = 100,
            n: int = 100_000, alpha: float = 0.001, batch_size: int = 1000) -> SmoothingResult:
    """CERTIFY of Cohen et al.: prediction and certified L2 radius per example (see the module doc)."""
    check_smoothing(sigma, alpha, n, n0, batch_size)
    guess = sample_counts(model, x, n0, sigma, num_classes, batch_size).argmax(1)
    counts = sample_counts(model, x, n, sigma, num_classes, batch_size)
    n_a = counts.gather(1, guess[:, None]).squeeze(1).numpy()
    p_lower = clopper_pearson_lower(n_a, n, alpha)
    ok = p_lower > 0.5
    radius = np.where(ok, sigma * stats.norm.ppf(np.clip(p_lower, 0.5, 1.0)), 0.0)
    pred = torch.where(torch.from_numpy(ok), guess, torch.full_like(guess, ABSTAIN))
    return SmoothingResult(pred, torch.from_numpy(radius).float())
