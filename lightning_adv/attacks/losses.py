"""Per-example losses an attack can maximise.

Every function maps ``(outputs, target) -> (B,)`` losses, so PGD with restarts can keep
the worst case per example. Logits are promoted to float32 first: under fp16/bf16
autocast a softmax in half precision loses the small differences an attack climbs.
"""
from __future__ import annotations

from typing import Callable, Dict

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["LossFn", "cross_entropy_loss", "kl_loss", "margin_loss", "ATTACK_LOSSES", "get_attack_loss"]

LossFn = Callable[[Tensor, Tensor], Tensor]


def cross_entropy_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Cross-entropy with integer labels, per example (Madry et al.; ARD; AQ)."""
    return F.cross_entropy(logits.float(), target, reduction="none")


def kl_loss(logits: Tensor, target_probs: Tensor) -> Tensor:
    """``KL(target_probs || softmax(logits))`` per example, summed over classes.

    The TRADES attack maximises this with ``target_probs = softmax(f(x_clean))``.
    """
    log_q = F.log_softmax(logits.float(), dim=-1)
    p = target_probs.float()
    return (p * (torch.log(p.clamp_min(1e-12)) - log_q)).sum(dim=-1)


def margin_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Carlini-Wagner margin ``max_{j != y} z_j - z_y`` per example (positive = wrong)."""
    z = logits.float()
    true = z.gather(1, target.view(-1, 1)).squeeze(1)
    other = z.clone()
    other.scatter_(1, target.view(-1, 1), float("-inf"))
    return other.max(dim=1).values - true


ATTACK_LOSSES: Dict[str, LossFn] = {"ce": cross_entropy_loss, "kl": kl_loss, "margin": margin_loss}


def get_attack_loss(name: str) -> LossFn:
    if name not in ATTACK_LOSSES:
        raise ValueError(f"unknown attack loss={name!r}; use one of {sorted(ATTACK_LOSSES)} or pass a callable")
    return ATTACK_LOSSES[name]
