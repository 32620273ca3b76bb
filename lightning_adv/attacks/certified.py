"""Certified rows of the suite: what the suite needs to know about a certifier, and the
per-example soundness check of certificates against attacks.

A *certifier* is an :class:`~.base.Attack` with ``kind = "certified"`` and a method
``certify(model, x, y, mode_module=None) -> (B,) bool`` (True: the prediction provably
cannot change in the ball of radius ``eps``; e.g. :class:`lightning_adv.certify.Certify`).
The suite runs it on every clean-correct example (never in the cascade), records a row
whose accuracy is the certified accuracy, a lower bound of robust accuracy, and keeps it
out of the per-example worst case, which is the attacks' upper bound.

Soundness: an example certified in a ball must not be broken by any attack whose
adversarial example lies in that ball. :func:`certified_but_broken` checks it per example
with the perturbation norm the attack actually used (an L2 perturbation of norm r lies in
the Linf ball of radius r), so unbounded attacks (DeepFool, CW) are checked too.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["is_certifier", "certified_but_broken"]

#: relative slack on perturbation norms (float32 projections land on eps up to rounding)
_NORM_SLACK = 1e-5


def is_certifier(attack: Any) -> bool:
    return getattr(attack, "kind", None) == "certified" and callable(getattr(attack, "certify", None))


def _inside(cert: Any, attack: Any, norms: Tensor) -> Tensor:
    """Per example: the attack's perturbation lies in the certifier's ball."""
    if attack.domain != "image" or not (attack.norm == cert.norm or (cert.norm == "linf" and attack.norm == "l2")):
        return torch.zeros_like(norms, dtype=torch.bool)
    return norms <= cert.eps * (1 + _NORM_SLACK) + 1e-7


def certified_but_broken(records: dict[str, Tensor], attacks: list[Any]) -> tuple[Tensor, list[str]]:
    """Examples certified by some certifier and fooled by some attack inside its ball, and the pairs involved."""
    n = records["index"].shape[0]
    bad = torch.zeros(n, dtype=torch.bool)
    pairs: list[str] = []
    for cert in (a for a in attacks if is_certifier(a)):
        certified = records[f"{cert.label}/correct"]
        for att in (a for a in attacks if not is_certifier(a)):
            hit = certified & records[f"{att.label}/fooled"] & _inside(cert, att, records[f"{att.label}/norm"])
            if hit.any():
                pairs.append(f"{cert.label} vs {att.label}: {int(hit.sum())}")
                bad |= hit
    return bad, pairs
