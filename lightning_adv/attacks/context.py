"""What every attack runs inside, whatever its algorithm: the model's train/eval mode, autograd
re-enabled under Lightning's evaluation contexts, and inputs usable by autograd.

:class:`~lightning_adv.attacks.Attack` (the general base), the :func:`~lightning_adv.attacks.pgd`
loop, the suite and the training objectives share these; they are no part of any one attack.

* :func:`module_mode` puts a module in train or eval mode for a block and restores every
  submodule's own mode afterwards (torchattacks resets the whole model to ``train()``, which is
  wrong for a frozen teacher or an eval-mode BN);
* :func:`attack_grad_context` turns autograd on inside Lightning's ``no_grad`` validation and
  ``inference_mode`` test;
* :func:`as_normal` detaches a tensor and clones an inference tensor, so that autograd can use it.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, Optional

import torch
from torch import Tensor, nn

__all__ = ["BN_MODES", "module_mode", "attack_grad_context", "as_normal"]

BN_MODES = ("train", "eval", "keep")


@contextlib.contextmanager
def module_mode(module: Optional[nn.Module], mode: str) -> Iterator[None]:
    """Put ``module`` in train or eval mode for the block; restore every submodule's mode.

    ``mode='keep'`` (or ``module=None``) leaves modes untouched.
    """
    if mode not in BN_MODES:
        raise ValueError(f"bn_mode must be one of {BN_MODES}, got bn_mode={mode!r}")
    if module is None or mode == "keep":
        yield
        return
    saved = [(m, m.training) for m in module.modules()]
    module.train(mode == "train")
    try:
        yield
    finally:
        for m, was_training in saved:
            m.training = was_training


@contextlib.contextmanager
def attack_grad_context() -> Iterator[None]:
    """Autograd on, inside Lightning's ``no_grad`` validation or ``inference_mode`` test."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


def as_normal(t: Any) -> Any:
    """A detached tensor usable by autograd (inference tensors are cloned); anything else as it is."""
    if isinstance(t, Tensor):
        if t.is_inference():
            t = t.clone()
        return t.detach()
    return t
