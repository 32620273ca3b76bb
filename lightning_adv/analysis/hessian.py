"""Training-loss Hessian: Hessian-vector products over a data set and its extreme eigenvalues.

Table 6.1 reports, at initialisation and after training, the loss, the gradient norm and
the minimum Hessian eigenvalue (500 shifted power iterations on the full data set); the
remark after it the maximum eigenvalue. :class:`DatasetHessian` gives the loss, the
gradient and exact Hessian-vector products (double backward) of the *mean* loss over a
list of batches; sums are reduced with a user-supplied ``reduce`` (an all-reduce under
DDP, where each rank holds a shard) before dividing by the global example count, so the
operator is the same on every rank. :func:`lanczos` (default; full reorthogonalisation)
and :func:`power_iteration` find the extreme eigenvalues of any symmetric ``matvec``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._utils import trainable_parameters

__all__ = [
    "DatasetHessian",
    "lanczos",
    "power_iteration",
    "extreme_eigenvalues",
    "EigenResult",
    "full_hessian",
]

Matvec = Callable[[Tensor], Tensor]
Reduce = Callable[[Tensor], Tensor]


def _identity(t: Tensor) -> Tensor:
    return t


class DatasetHessian:
    """Loss, gradient and Hessian-vector products of the mean loss of ``model`` over ``batches``.

    Args:
        model: the network; put it in the mode you want (eval for BatchNorm) yourself.
        batches: ``(x, y)`` pairs already on the model's device (this rank's shard).
        loss_fn: per-batch loss with ``reduction="sum"`` semantics (default cross-entropy sum).
        reduce: sums a tensor over ranks (identity on one process).
        params: parameters to differentiate (default: the trainable ones).
    """

    def __init__(self, model: nn.Module, batches: Sequence[tuple[Tensor, Tensor]],
                 loss_fn: Optional[Callable[[Tensor, Tensor], Tensor]] = None, reduce: Optional[Reduce] = None,
                 params: Optional[list[Tensor]] = None) -> None:
        self.model = model
        self.batches = list(batches)
        self.loss_fn = loss_fn or (lambda logits, y: F.cross_entropy(logits, y, reduction="sum"))
        self.reduce = reduce or _identity
        self.params = params if params is not None else list(trainable_parameters(model).values())
        if not self.params:
            raise ValueError("the model has no trainable parameters")
        device = self.params[0].device
        local = torch.tensor(float(sum(len(y) for _, y in self.batches)), device=device, dtype=torch.float64)
        self.count = float(self.reduce(local))
        if self.count <= 0:
            raise ValueError("DatasetHessian got no examples (empty batches on every rank)")
        self.dim = sum(p.numel() for p in self.params)
        self.matvecs = 0

    def _flat(self, tensors: Sequence[Optional[Tensor]]) -> Tensor:
        return torch.cat([(t if t is not None else torch.zeros_like(p)).reshape(-1)
                          for t, p in zip(tensors, self.params)])

    def loss_and_gradient(self) -> tuple[float, Tensor]:
        """Mean loss and its gradient (flat, float64)."""
        total = torch.zeros((), dtype=torch.float64, device=self.params[0].device)
        grad = torch.zeros(self.dim, dtype=torch.float64, device=self.params[0].device)
        with torch.enable_grad():
            for x, y in self.batches:
                loss = self.loss_fn(self.model(x), y)
                g = torch.autograd.grad(loss, self.params, allow_unused=True)
                total += loss.detach().double()
                grad += self._flat(g).double()
        total, grad = self.reduce(total), self.reduce(grad)
        return float(total) / self.count, grad / self.count

    def hvp(self, v: Tensor) -> Tensor:
        """``H v`` for a flat vector ``v`` (any float dtype; returned in float64)."""
        self.matvecs += 1
        out = torch.zeros(self.dim, dtype=torch.float64, device=self.params[0].device)
        chunks = list(torch.split(v.to(self.params[0].dtype), [p.numel() for p in self.params]))
        vs = [c.reshape(p.shape) for c, p in zip(chunks, self.params)]
        with torch.enable_grad():
            for x, y in self.batches:
                loss = self.loss_fn(self.model(x), y)
                g = torch.autograd.grad(loss, self.params, create_graph=True, allow_unused=True)
                dot = cast(Tensor, sum((gi * vi).sum() for gi, vi in zip(g, vs) if gi is not None))
                hv = torch.autograd.grad(dot, self.params, allow_unused=True)
                out += self._flat(hv).double()
        return self.reduce(out) / self.count


def full_hessian(matvec: Matvec, dim: int, device: Optional[torch.device] = None) -> Tensor:
    """The explicit ``dim x dim`` matrix of ``matvec`` (``dim`` products; for tests of tiny models)."""
    eye = torch.eye(dim, dtype=torch.float64, device=device)
    return torch.stack([matvec(eye[i]) for i in range(dim)], dim=1)


@dataclass
class EigenResult:
    """Extreme eigenvalues and the number of matrix-vector products spent."""

    largest: float
    smallest: float
    matvecs: int


def _start_vector(dim: int, seed: int, device: Optional[torch.device]) -> Tensor:
    gen = torch.Generator().manual_seed(seed)  # CPU generator: the same vector on every rank/device
    v = torch.randn(dim, generator=gen, dtype=torch.float64)
    return (v / v.norm()).to(device)


def lanczos(matvec: Matvec, dim: int, iterations: int = 50, seed: int = 0,
            device: Optional[torch.device] = None, tol: float = 1e-10) -> tuple[Tensor, int]:
    """Ritz values (ascending) of ``matvec`` after ``iterations`` Lanczos steps with full reorthogonalisation.

    The extreme Ritz values converge to the extreme eigenvalues first; ``iterations`` is
    capped at ``dim`` (then they are exact). Returns the Ritz values and the products used.
    """
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got iterations={iterations}")
    m = min(int(iterations), dim)
    q = _start_vector(dim, seed, device)
    basis = [q]
    alphas: list[float] = []
    betas: list[float] = []
    used = 0
    for k in range(m):
        w = matvec(basis[k]).double()
        used += 1
        alpha = float(w @ basis[k])
        alphas.append(alpha)
        Q = torch.stack(basis)
        w = w - Q.T @ (Q @ w)  # full reorthogonalisation (twice is enough)
        w = w - Q.T @ (Q @ w)
        beta = float(w.norm())
        if k + 1 == m or beta < tol * max(1.0, abs(alpha)):
            break
        betas.append(beta)
        basis.append(w / beta)
    n = len(alphas)
    t = torch.diag(torch.tensor(alphas, dtype=torch.float64))
    if n > 1:
        off = torch.tensor(betas[: n - 1], dtype=torch.float64)
        t = t + torch.diag(off, 1) + torch.diag(off, -1)
    return torch.linalg.eigvalsh(t), used


def power_iteration(matvec: Matvec, dim: int, iterations: int = 500, shift: float = 0.0, seed: int = 0,
                    device: Optional[torch.device] = None, tol: float = 1e-6) -> tuple[float, int]:
    """Dominant eigenvalue of ``matvec - shift * I`` plus ``shift`` (Rayleigh quotient); stops at relative change < tol."""
    v = _start_vector(dim, seed, device)
    value = math.nan
    used = 0
    for _ in range(int(iterations)):
        w = matvec(v).double() - shift * v
        used += 1
        new = float(v @ w)
        norm = w.norm()
        if norm == 0:
            return shift, used
        v = w / norm
        if math.isfinite(value) and abs(new - value) <= tol * max(abs(new), 1e-12):
            value = new
            break
        value = new
    return value + shift, used


def extreme_eigenvalues(matvec: Matvec, dim: int, method: str = "lanczos", iterations: int = 50, seed: int = 0,
                        device: Optional[torch.device] = None, tol: float = 1e-6) -> EigenResult:
    """Largest and smallest eigenvalue of a symmetric operator.

    ``method="lanczos"``: the extreme Ritz values of one Lanczos run of ``iterations``
    steps. ``method="power"`` (the thesis' way): power iteration for the dominant
    eigenvalue, then power iteration on the operator shifted by it for the other end;
    ``iterations`` per run.
    """
    if method == "lanczos":
        ritz, used = lanczos(matvec, dim, iterations, seed, device)
        return EigenResult(float(ritz[-1]), float(ritz[0]), used)
    if method == "power":
        dominant, used1 = power_iteration(matvec, dim, iterations, 0.0, seed, device, tol)
        other, used2 = power_iteration(matvec, dim, iterations, dominant, seed + 1, device, tol)
        hi, lo = max(dominant, other), min(dominant, other)
        return EigenResult(hi, lo, used1 + used2)
    raise ValueError(f"method={method!r} is not one of ('lanczos', 'power')")
