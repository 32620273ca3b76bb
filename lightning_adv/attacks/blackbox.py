"""Black-box attacks of the suite: a zeroth-order attack (lecture 8.2.3) and Square.

Zeroth-order gradient estimates (lecture section 8.2.3, Nesterov 2011), with ``u ~ N(0, I)``
(``B = I``) and ``q`` directions averaged::

    g_mu(x)     = (f(x + mu u) - f(x)) / mu * u                 one-point (forward difference)
    g_hat_mu(x) = (f(x + mu u) - f(x - mu u)) / (2 mu) * u      two-point (antithetic, NES)

:func:`zo_gradient` returns the estimate and the exact number of queries it spent.
:class:`ZerothOrder` uses it as a ZOO/NES-style attack: sign steps on the estimated
gradient of the Carlini-Wagner margin (score-based: only logits are read), projected onto
the Linf (or L2) ball, stopping per example at the first misclassification or when the
query budget is spent. Queries are counted per example and reported.

:class:`Square` is the Square Attack (Andriushchenko et al. 2020) of the AutoAttack
authors' code, packaged on PyPI as ``pyautoattack`` (pinned in pyproject.toml).
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

from .base import Attack, AttackOutput, Model
from ..validation import check_int, check_real, check_step_size
from .losses import margin_loss
from .threat import clamp_to_image, make_threat

__all__ = ["zo_gradient", "ZerothOrder", "Square"]


def zo_gradient(f: Callable[[Tensor], Tensor], x: Tensor, mu: float, samples: int = 1, two_point: bool = True,
                f_x: Optional[Tensor] = None, generator: Optional[torch.Generator] = None) -> tuple[Tensor, int]:
    """Random gradient-free estimate of ``grad f(x)`` per example (lecture 8.2.3).

    Args:
        f: maps a batch (B, ...) to per-example values (B,); each call is one query per example.
        x: the point, (B, ...).
        mu: smoothing / finite-difference step.
        samples: number of Gaussian directions ``u`` averaged.
        two_point: the symmetric form (2 queries per direction) instead of the forward
            difference (1 query per direction plus one for ``f(x)``).
        f_x: ``f(x)`` if already known (the one-point form then spends no query on it).

    Returns:
        ``(estimate, queries)``: the estimate (same shape as ``x``) and the number of
        queries spent per example.
    """
    if samples < 1 or mu <= 0:
        raise ValueError(f"zo_gradient needs samples >= 1 and mu > 0, got samples={samples}, mu={mu}")
    queries = 0
    shape = (-1, *([1] * (x.dim() - 1)))
    if not two_point and f_x is None:
        f_x = f(x)
        queries += 1
    est = torch.zeros_like(x)
    for _ in range(samples):
        u = torch.randn(x.shape, generator=generator, device="cpu", dtype=x.dtype).to(x.device)
        if two_point:
            diff = (f(x + mu * u) - f(x - mu * u)) / (2 * mu)
            queries += 2
        else:
            assert f_x is not None
            diff = (f(x + mu * u) - f_x) / mu
            queries += 1
        est += diff.view(shape).to(x.dtype) * u
    return est / samples, queries


class ZerothOrder(Attack):
    """ZOO/NES-style score-based attack on the margin loss with a counted query budget.

    Each iteration spends one query at the current point (loss and success check) and
    ``2 * samples`` (two-point) or ``samples`` (one-point) queries for the estimate; an
    example stops when it is misclassified or its next iteration would exceed
    ``max_queries``.
    """

    black_box = True
    kind = "black-box"

    def __init__(self, eps: float = 8 / 255, norm: str = "linf", max_queries: int = 1000, samples: int = 10,
                 mu: float = 0.005, step_size: Optional[float] = None, two_point: bool = True, seed: int = 0,
                 name: Optional[str] = None, bn_mode: str = "eval") -> None:
        super().__init__(norm=norm, eps=eps, name=name, bn_mode=bn_mode)
        self.max_queries = check_int("max_queries", max_queries, 1, whole_floats=True)
        self.samples = check_int("samples", samples, 1, whole_floats=True)
        self.mu = check_real("mu", mu, positive=True)
        if step_size is not None:
            check_step_size(step_size, self.eps)
        self.step_size = step_size
        self.two_point = two_point
        self.seed = int(seed)
        if self.max_queries < 1 + self.queries_per_estimate:
            raise ValueError(f"max_queries={max_queries} is below one iteration's {1 + self.queries_per_estimate} "
                             f"queries (samples={samples}, two_point={two_point}); raise max_queries")

    @property
    def queries_per_estimate(self) -> int:
        return 2 * self.samples if self.two_point else self.samples

    def default_label(self) -> str:
        form = "2pt" if self.two_point else "1pt"
        return f"zo_{form}_q{self.max_queries}_{self.norm}{self._eps_tag()}"

    def _perturb(self, model: Model, x: Tensor, y: Tensor, targets: Optional[Tensor] = None) -> AttackOutput:
        assert self.eps is not None
        threat = make_threat(self.norm, self.eps)
        step = self.step_size if self.step_size is not None else self.eps / 10
        gen = torch.Generator().manual_seed(self.seed)
        delta = torch.zeros_like(x)
        queries = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        active = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        per_iter = 1 + self.queries_per_estimate
        with torch.no_grad():
            while True:
                active &= queries + per_iter <= self.max_queries
                idx = active.nonzero().squeeze(1)
                if idx.numel() == 0:
                    break
                xi, yi, di = x[idx], y[idx], delta[idx]

                f_x = margin_loss(model(xi + di), yi)
                queries[idx] += 1
                fooled = f_x > 0
                active[idx[fooled]] = False
                keep = ~fooled
                if not keep.any():
                    break
                idx, xi, yi, di = idx[keep], xi[keep], yi[keep], di[keep]

                def f_keep(z: Tensor, yi: Tensor = yi) -> Tensor:
                    return margin_loss(model(z), yi)

                grad, spent = zo_gradient(f_keep, xi + di, self.mu, self.samples, self.two_point, f_x=f_x[keep],
                                          generator=gen)
                queries[idx] += spent
                delta[idx] = clamp_to_image(xi, threat.project(threat.step(di, grad, step)))
        return AttackOutput(x + delta, queries=queries)


class Square(Attack):
    """Square Attack (score-based, random search) of the AutoAttack authors (``pyautoattack``).

    One run of ``n_queries`` with ``p_init`` (AutoAttack standard: 5000 and 0.8), margin
    loss; the per-example query counts come from the library's own counter.
    """

    black_box = True
    kind = "black-box"

    def __init__(self, eps: float = 8 / 255, norm: str = "linf", n_queries: int = 5000, p_init: float = 0.8,
                 seed: int = 0, name: Optional[str] = None, bn_mode: str = "eval") -> None:
        super().__init__(norm=norm, eps=eps, name=name, bn_mode=bn_mode)
        self.n_queries = check_int("n_queries", n_queries, 1, whole_floats=True)
        self.p_init = check_real("p_init", p_init, positive=True, maximum=1.0)
        self.seed = int(seed)

    def default_label(self) -> str:
        return f"square_q{self.n_queries}_{self.norm}{self._eps_tag()}"

    def _perturb(self, model: Model, x: Tensor, y: Tensor, targets: Optional[Tensor] = None) -> AttackOutput:
        from pyautoattack.square import SquareAttack

        assert self.eps is not None
        if self.eps == 0:
            return AttackOutput(x.clone(), queries=torch.zeros(x.shape[0], dtype=torch.long, device=x.device))
        sq = SquareAttack(model, norm={"linf": "Linf", "l2": "L2"}[self.norm], n_queries=self.n_queries, eps=self.eps,
                          p_init=self.p_init, n_restarts=1, seed=self.seed, verbose=False, resc_schedule=False,
                          device=x.device)
        torch.manual_seed(self.seed)
        with torch.no_grad():
            sq.init_hyperparam(x)
            n_queries, x_adv = sq.attack_single_run(x, y)
        return AttackOutput(x_adv, queries=n_queries.round().long())
