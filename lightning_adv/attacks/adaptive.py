"""Adaptive attacks against defenses that break gradients (Athalye et al. 2018; Tramer et al. 2020).

A defense that makes the gradient useless is measured, not praised, by attacking it with the
right tool:

* **EOT** (Expectation over Transformation) for randomised models or input transforms: every
  gradient attack of the engine (:class:`~.whitebox.PGD`, :class:`~.whitebox.FGSM`,
  :class:`~.whitebox.MIFGSM`) takes ``eot_samples=n`` and averages its input gradient over
  ``n`` forwards (:func:`~.pgd.input_gradient`); AutoAttack's ``version='rand'`` is the authors'
  APGD-CE + APGD-DLR with 20 EOT samples.
* **BPDA** (Backward Pass Differentiable Approximation): :class:`BPDA` wraps a
  non-differentiable pre-processing step (quantisation, JPEG, a purifier whose gradient is
  useless): its forward is the step itself, its backward the identity (the straight-through
  estimator) or the gradient of a differentiable surrogate the user gives. Put it in front of
  the classifier (``nn.Sequential(BPDA(pre), classifier)``) and every attack of the suite goes
  through the defense with a usable gradient.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

__all__ = ["BPDA"]


class BPDA(nn.Module):
    """A pre-processing step with the backward pass of the identity or of ``surrogate``.

    ``forward(x)`` returns ``preprocess(x)`` exactly; its gradient w.r.t. ``x`` is the
    identity's (``surrogate=None``) or ``surrogate``'s: the output is computed as
    ``s(x) + (preprocess(x) - s(x)).detach()`` with ``s`` the surrogate (or the identity).

    BPDA is for steps whose own gradient is useless. On the first forward (or by calling
    :meth:`check`) the step is tried with autograd: if its input gradient is non-zero, the
    step is differentiable and BPDA would replace a true gradient by an approximation, so a
    ``ValueError`` says to attack it directly (or with EOT if it is random). Set
    ``check_differentiable=False`` to use BPDA on purpose anyway (e.g. a purifier whose true
    gradient vanishes numerically).

    Args:
        preprocess: the defense's pre-processing, images in [0, 1] to images.
        surrogate: a differentiable approximation of ``preprocess`` for the backward pass
            (default: the identity, Athalye et al.'s choice for quantisation and JPEG).
        check_differentiable: refuse a step whose true input gradient is non-zero.
    """

    def __init__(self, preprocess: nn.Module, surrogate: Optional[nn.Module] = None,
                 check_differentiable: bool = True) -> None:
        super().__init__()
        if not callable(preprocess):
            raise ValueError(f"BPDA.preprocess must be a module or callable, got {type(preprocess).__name__}")
        self.preprocess = preprocess
        self.surrogate = surrogate
        self.check_differentiable = bool(check_differentiable)
        self._checked = False

    def check(self, x: Tensor) -> None:
        """Raise if ``preprocess`` has a non-zero input gradient at ``x`` (it needs no BPDA)."""
        with torch.inference_mode(False), torch.enable_grad():
            probe = x.detach().clone().requires_grad_(True)
            out = self.preprocess(probe)
            grad = None
            if isinstance(out, Tensor) and out.requires_grad:
                (grad,) = torch.autograd.grad(out.float().sum(), probe, allow_unused=True)
        if grad is not None and bool((grad != 0).any()):
            name = type(self.preprocess).__name__
            raise ValueError(f"BPDA(preprocess={name}): {name} is differentiable (non-zero input gradient), so BPDA "
                             f"would replace its true gradient by an approximation; attack the model directly (with "
                             f"eot_samples > 1 if it is random), or set check_differentiable=false on purpose")
        self._checked = True

    def forward(self, x: Tensor) -> Tensor:
        if self.check_differentiable and not self._checked:
            self.check(x)
        with torch.no_grad():
            out = self.preprocess(x.detach())
        if out.shape != x.shape:
            raise ValueError(f"BPDA: preprocess maps inputs {tuple(x.shape)} to {tuple(out.shape)}; the identity "
                             f"backward needs equal shapes (give a surrogate of the same output shape)")
        approx = x if self.surrogate is None else self.surrogate(x)
        if not x.requires_grad and not (isinstance(approx, Tensor) and approx.requires_grad):
            return out
        return approx + (out.to(approx.dtype) - approx).detach()
