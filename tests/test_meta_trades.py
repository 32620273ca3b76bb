"""Meta-TRADES' attack: the queries' cross-entropy by default (the authors' code), the KL of the TRADES paper
with ``attack.loss: kl`` (docs/objectives.md)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightning_adv.attacks import PGD, cross_entropy_loss, kl_loss
from lightning_adv.objectives import MetaTRADES


class _Tasks:
    """A module stand-in: a fixed linear learner, and an attack that records what it was asked to maximise."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        self.learner = nn.Linear(6, 3)
        self.seen: dict = {}

    def adapt(self, sx, sy):
        return self.learner

    def attack_tasks(self, learner, x, target, attack, loss_fn):
        self.seen.update(target=target, loss_fn=loss_fn, attack=attack)
        return x + 0.1


def _batch():
    g = torch.Generator().manual_seed(1)
    return (torch.rand(2, 3, 6, generator=g), torch.randint(0, 3, (2, 3), generator=g),
            torch.rand(2, 4, 6, generator=g), torch.randint(0, 3, (2, 4), generator=g))


@pytest.mark.parametrize("loss", ["ce", "kl"])
def test_meta_trades_attack_maximises_ce_by_default_and_the_kl_on_request(loss):
    obj = MetaTRADES(beta=2.0) if loss == "ce" else MetaTRADES(beta=2.0, attack=PGD(eps=8 / 255, steps=7, loss="kl"))
    assert obj.attack.loss == loss
    module = _Tasks()
    sx, sy, qx, qy = _batch()
    out = obj.step(module, sx, sy, qx, qy)
    if loss == "ce":  # the authors' code: the attack ascends the queries' cross-entropy of their labels
        assert module.seen["loss_fn"] is cross_entropy_loss and torch.equal(module.seen["target"], qy)
    else:  # the TRADES paper: the KL to the clean prediction
        assert module.seen["loss_fn"] is kl_loss
        assert torch.allclose(module.seen["target"], F.softmax(module.learner(qx), dim=-1))
    with torch.no_grad():  # the training loss is the same either way: CE(clean) + beta KL(clean || adv)
        clean, adv = module.learner(qx), module.learner(qx + 0.1)
        kl = kl_loss(adv.flatten(0, 1), F.softmax(clean.flatten(0, 1), dim=-1)).mean()
        expected = F.cross_entropy(clean.flatten(0, 1), qy.flatten()) + 2.0 * kl
    assert torch.allclose(out.loss, expected, atol=1e-6)
