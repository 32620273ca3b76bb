"""Meta-learning objectives (thesis chapter 5) over an adapted few-shot learner.

They run in :class:`~lightning_adv.modules.AdversarialQuerying`, which gives
``module.adapt(support_x, support_y, adv_support=None)`` (a learner ``(T, Q, ...) ->
(T, Q, ways)``) and ``module.attack_tasks(learner, x, target, attack, loss_fn)`` (the
attack on a stack of task sets through that learner; only the inputs move).

* :class:`MetaNatural`: natural meta-learning, CE of the clean queries.
* :class:`AQ`: adversarial querying (Algorithm 5): the queries attacked through the
  learner adapted on the clean support (authors: PGD 8/255, 7 steps of 2/255, train mode).
* :class:`MetaTRADES` (table 5.6): ``CE(clean queries) + beta KL(clean || adversarial)``.
* :class:`ADML` (table 5.1 baseline; the authors' ``meta_ADML.py``):
  ``(CE(adv query | clean-adapted) + CE(clean query | adv-adapted)) / 2``, where the
  adv-adapted learner attacks the support against its current fast weights at every
  inner step (needs a gradient-based learner: MAML).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ..attacks import PGD, cross_entropy_loss, get_attack_loss, kl_loss
from ..validation import check_real
from .base import Objective, StepOutput, training_attack
from .protocols import EpisodicModule

__all__ = ["MetaNatural", "AQ", "MetaTRADES", "ADML"]

_AQ_ATTACK = PGD(eps=8 / 255, steps=7, step_size=2 / 255, bn_mode="train")


def _ce(logits: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(logits.flatten(0, 1), y.flatten())


class MetaNatural(Objective[EpisodicModule]):
    """Natural meta-learning: the cross-entropy of the clean queries."""

    kind = "episodic"

    def __init__(self) -> None:
        pass

    def step(self, module: EpisodicModule, *batch: Tensor) -> StepOutput:
        sx, sy, qx, qy = batch
        logits = module.adapt(sx, sy)(qx)
        return StepOutput(_ce(logits, qy), clean_logits=logits)


class AQ(Objective[EpisodicModule]):
    """Adversarial querying: CE of the queries attacked through the clean-adapted learner."""

    kind = "episodic"

    def __init__(self, attack: PGD = _AQ_ATTACK) -> None:
        self.attack = training_attack(attack)

    def step(self, module: EpisodicModule, *batch: Tensor) -> StepOutput:
        sx, sy, qx, qy = batch
        learner = module.adapt(sx, sy)
        logits = learner(module.attack_tasks(learner, qx, qy, self.attack, cross_entropy_loss))
        return StepOutput(_ce(logits, qy), adv_logits=logits)


class MetaTRADES(Objective[EpisodicModule]):
    """Meta-TRADES: ``CE(clean queries) + beta * KL(f(q) || f(q'))`` (KL over the classes,
    mean over queries; ``beta`` is the thesis' ``1/lambda``). The attack maximises the KL to
    the clean prediction with ``attack.loss: kl`` (else the queries' cross-entropy)."""

    kind = "episodic"

    def __init__(self, beta: float = 1.0, attack: PGD = _AQ_ATTACK) -> None:
        self.beta = check_real("beta", beta, minimum=0.0)
        self.attack = training_attack(attack)

    def step(self, module: EpisodicModule, *batch: Tensor) -> StepOutput:
        sx, sy, qx, qy = batch
        learner = module.adapt(sx, sy)
        clean = learner(qx)
        if self.attack.loss == "kl":
            qx_adv = module.attack_tasks(learner, qx, F.softmax(clean.detach(), dim=-1), self.attack, kl_loss)
        else:
            qx_adv = module.attack_tasks(learner, qx, qy, self.attack, get_attack_loss(self.attack.loss))
        adv = learner(qx_adv)
        robust = kl_loss(adv.flatten(0, 1), F.softmax(clean.flatten(0, 1), dim=-1)).mean()
        loss = _ce(clean, qy) + self.beta * robust
        return StepOutput(loss, adv_logits=adv, clean_logits=clean, logs={"trades_kl": robust.detach()})


class ADML(Objective[EpisodicModule]):
    """ADML (Yin et al. 2018, as the authors' ``meta_ADML.py``): see the module doc."""

    kind = "episodic"

    def __init__(self, attack: PGD = _AQ_ATTACK) -> None:
        self.attack = training_attack(attack)

    def check_module(self, module: EpisodicModule) -> None:
        if not module.learner.gradient_based:
            raise ValueError(f"ADML attacks the support at every inner step, so it needs a gradient-based learner "
                             f"(learner: lightning_adv.meta.MAML), got {type(module.learner).__name__}")

    def step(self, module: EpisodicModule, *batch: Tensor) -> StepOutput:
        sx, sy, qx, qy = batch
        learner = module.adapt(sx, sy)
        adv_learner = module.adapt(sx, sy, adv_support=self.attack)  # support attacked at every inner step
        adv = learner(module.attack_tasks(learner, qx, qy, self.attack, cross_entropy_loss))
        loss = 0.5 * (_ce(adv, qy) + _ce(adv_learner(qx), qy))
        return StepOutput(loss, adv_logits=adv)
