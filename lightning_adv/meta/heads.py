"""Few-shot classification heads (base learners) on backbone features, batched over tasks.

A head is fit on the support features of a batch of tasks and returns a function from
query features to logits. learn2learn provides ProtoNet (``PrototypicalClassifier``) and
MetaOptNet (``SVClassifier``, a Crammer-Singer SVM solved by qpth); R2-D2's ridge
regression is written here (learn2learn has none).

Shapes: support ``(T, S, D)``, labels ``(T, S)`` in ``0..ways-1``, query ``(T, Q, D)``,
logits ``(T, Q, ways)``. Every head multiplies its logits by one learnable scale
initialised to 1 (the authors' ``ClassificationHead``; no bias, lambda fixed).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..extras import require_fewshot
from ..validation import check_real

__all__ = ["FewShotHead", "R2D2Head", "ProtoNetHead", "MetaOptNetHead", "ridge_regression_logits", "ridge_dual_weights",
           "HEADS"]

QueryFn = Callable[[Tensor], Tensor]


def ridge_dual_weights(support: Tensor, onehot: Tensor, lam: Tensor | float) -> Tensor:
    """``alpha = (X X^T + lam I)^-1 Y``, batched: support ``(T, S, D)``, targets ``(T, S, W)``."""
    s = support.shape[1]
    eye = torch.eye(s, device=support.device, dtype=support.dtype)
    return torch.linalg.solve(support @ support.transpose(1, 2) + lam * eye, onehot)


def ridge_regression_logits(support: Tensor, onehot: Tensor, query: Tensor, lam: Tensor | float) -> Tensor:
    """R2-D2's differentiable ridge regression in the Woodbury (dual) form, batched.

    ``W = X^T (X X^T + lam I)^-1 Y`` and logits ``Q W`` for support features ``X``
    ``(T, S, D)``, 0/1 one-hot targets ``Y`` ``(T, S, W)`` and queries ``Q`` ``(T, Q, D)``.
    The dual form solves an ``S x S`` system instead of ``D x D`` (S = ways * shots is far
    smaller than the 8192- to 51200-d features). It equals the primal ridge solution
    ``(X^T X + lam I)^-1 X^T Y``.
    """
    return (query @ support.transpose(1, 2)) @ ridge_dual_weights(support, onehot, lam)


class FewShotHead(nn.Module):
    """Base class: a learnable output scale (init ``scale``) and the ``fit`` interface."""

    def __init__(self, scale: float = 1.0, learn_scale: bool = True) -> None:
        super().__init__()
        if scale <= 0:
            raise ValueError(f"head scale must be > 0, got scale={scale}")
        self.scale = nn.Parameter(torch.tensor(float(scale)), requires_grad=bool(learn_scale))

    def fit(self, support: Tensor, labels: Tensor, ways: int, fast: bool = False) -> QueryFn:
        """Fit on support features; return ``query (T, Q, D) -> logits (T, Q, ways)``.

        ``fast`` asks for the cheaper solver used inside attacks and at evaluation (only
        MetaOptNet has one: fewer QP iterations, as the authors).
        """
        raise NotImplementedError


class R2D2Head(FewShotHead):
    """Ridge-regression head of R2-D2 (:func:`ridge_regression_logits`).

    Args:
        lam: ridge penalty (authors' code: 50, fixed).
        learn_lambda: learn ``log(lam)`` as in Bertinetto et al.'s paper (the AQ code keeps
            it fixed).
        scale: initial output scale (learnable, authors: 1.0).
    """

    def __init__(self, lam: float = 50.0, learn_lambda: bool = False, scale: float = 1.0) -> None:
        super().__init__(scale)
        check_real("lam", lam, positive=True, hint="R2-D2's ridge lambda; the authors use 50")
        self.log_lam = nn.Parameter(torch.tensor(float(lam)).log(), requires_grad=bool(learn_lambda))

    @property
    def lam(self) -> Tensor:
        return self.log_lam.exp()

    def fit(self, support: Tensor, labels: Tensor, ways: int, fast: bool = False) -> QueryFn:
        alpha = ridge_dual_weights(support, F.one_hot(labels, ways).to(support.dtype), self.lam)

        def query_fn(query: Tensor) -> Tensor:  # solved once per support set, reused by every attack step
            return self.scale * ((query @ support.transpose(1, 2)) @ alpha)

        return query_fn


class ProtoNetHead(FewShotHead):
    """Prototypical networks via learn2learn's ``PrototypicalClassifier``.

    Logits are ``-||q - c_k||^2 / D`` (the authors divide by the feature dimension D).
    """

    def __init__(self, scale: float = 1.0, normalize_by_dim: bool = True) -> None:
        super().__init__(scale)
        require_fewshot("ProtoNetHead")
        self.normalize_by_dim = bool(normalize_by_dim)

    def fit(self, support: Tensor, labels: Tensor, ways: int, fast: bool = False) -> QueryFn:
        from learn2learn.nn import PrototypicalClassifier

        classifiers = [PrototypicalClassifier(support=s, labels=y) for s, y in zip(support, labels)]
        div = support.shape[-1] if self.normalize_by_dim else 1

        def query_fn(query: Tensor) -> Tensor:
            logits = torch.stack([c(q) for c, q in zip(classifiers, query)])
            return self.scale * logits / div

        return query_fn


class MetaOptNetHead(FewShotHead):
    """MetaOptNet-SVM via learn2learn's ``SVClassifier`` (qpth; Crammer-Singer dual).

    Args:
        c_reg: SVM regularisation C (authors: 0.1).
        max_iters: QP iterations for the training loss (authors: 15).
        fast_iters: QP iterations inside attacks and at evaluation (authors: 3).
    """

    def __init__(self, c_reg: float = 0.1, max_iters: int = 15, fast_iters: int = 3, scale: float = 1.0) -> None:
        super().__init__(scale)
        require_fewshot("MetaOptNetHead")
        require_fewshot("MetaOptNetHead", "qpth")
        if c_reg <= 0 or max_iters < 1 or fast_iters < 1:
            raise ValueError(f"MetaOptNet needs c_reg > 0 and iterations >= 1, got c_reg={c_reg}, "
                             f"max_iters={max_iters}, fast_iters={fast_iters}")
        self.c_reg, self.max_iters, self.fast_iters = float(c_reg), int(max_iters), int(fast_iters)

    def fit(self, support: Tensor, labels: Tensor, ways: int, fast: bool = False) -> QueryFn:
        from learn2learn.nn import SVClassifier

        iters = self.fast_iters if fast else self.max_iters
        classifiers = [SVClassifier(support=s, labels=y, ways=ways, C_reg=self.c_reg, max_iters=iters)
                       for s, y in zip(support, labels)]

        def query_fn(query: Tensor) -> Tensor:
            return self.scale * torch.stack([c(q) for c, q in zip(classifiers, query)])

        return query_fn


HEADS = {"r2d2": R2D2Head, "protonet": ProtoNetHead, "metaoptnet": MetaOptNetHead}
