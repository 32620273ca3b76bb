"""Adversarial-training objectives of one classifier: PGD-AT, TRADES, MART, free AT.

Each is a perturbation (:meth:`~PerturbationObjective.perturb`) followed by a loss at it
(:meth:`~PerturbationObjective.loss_at`); :class:`~lightning_adv.objectives.AWP` wraps
PGD-AT or TRADES by inserting a weight perturbation between the two.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..attacks import PGD, cross_entropy_loss, kl_loss, module_mode
from ..validation import check_real
from .base import FreeObjective, Objective, StepOutput, check_batch, training_attack
from .protocols import ClassifierModule

__all__ = ["PGDAT", "TRADES", "MART", "Free", "PerturbationObjective", "mart_loss", "trades_loss"]


def trades_loss(logits_clean: Tensor, logits_adv: Tensor, y: Tensor, beta: float) -> tuple[Tensor, Tensor]:
    """TRADES (Zhang et al. 2019): ``CE(f(x), y) + beta * KL(f(x) || f(x'))``, KL summed over
    classes and averaged over the batch (the official ``KLDivLoss(size_average=False) / B``).
    Returns ``(loss, kl)``."""
    robust = kl_loss(logits_adv, F.softmax(logits_clean, dim=1)).mean()
    return F.cross_entropy(logits_clean, y) + beta * robust, robust


def mart_loss(logits_clean: Tensor, logits_adv: Tensor, y: Tensor, beta: float) -> tuple[Tensor, Tensor]:
    """MART (Wang et al. 2020, eq. 11, as the official code computes it)::

        BCE(p(x'), y) + beta * mean_i KL(p(x_i) || p(x'_i)) * (1 - p_y(x_i))
        BCE(p, y) = -log p_y - log(1 - max_{k != y} p_k)

    with the official constants (``1.0001 - p``, ``+1e-12`` inside logs, ``1.0000001 - p_y``).
    Returns ``(loss, weighted_kl)``.
    """
    adv_probs = F.softmax(logits_adv.float(), dim=1)
    top2 = adv_probs.argsort(dim=1)[:, -2:]
    other = torch.where(top2[:, -1] == y, top2[:, -2], top2[:, -1])  # the most likely wrong class
    bce = F.cross_entropy(logits_adv.float(), y) + F.nll_loss(torch.log(1.0001 - adv_probs + 1e-12), other)
    nat_probs = F.softmax(logits_clean.float(), dim=1)
    true_probs = nat_probs.gather(1, y.view(-1, 1)).squeeze(1)
    kl = (torch.xlogy(nat_probs, nat_probs) - nat_probs * torch.log(adv_probs + 1e-12)).sum(dim=1)  # KLDivLoss
    robust = (kl * (1.0000001 - true_probs)).mean()
    return bce + beta * robust, robust


class PerturbationObjective(Objective[ClassifierModule]):
    """An input perturbation, then a loss at it (what AWP can wrap)."""

    attack: PGD

    def perturb(self, module: ClassifierModule, x: Tensor, y: Tensor) -> Tensor:
        raise NotImplementedError

    def loss_at(self, module: ClassifierModule, x: Tensor, x_adv: Tensor, y: Tensor) -> StepOutput:
        raise NotImplementedError

    def step(self, module: ClassifierModule, *batch: Tensor) -> StepOutput:
        x, y = batch
        return self.loss_at(module, x, self.perturb(module, x, y), y)


class PGDAT(PerturbationObjective):
    """PGD adversarial training (Madry et al. 2018): minimise ``CE(f(x'), y)``, ``x'`` from
    ``attack`` maximising the cross-entropy (or another loss of the labels: ``margin``).

    Default attack: the thesis' (Linf 8/255, 10 steps of 2/255, random start, the model in
    train mode while attacked, as the authors' code).
    """

    def __init__(self, attack: PGD = PGD(bn_mode="train")) -> None:
        attack = training_attack(attack)
        if attack.loss == "kl":
            raise ValueError("PGDAT's attack maximises a loss of the labels (attack.loss: ce or margin); the KL to "
                             "the clean prediction is TRADES' (lightning_adv.objectives.TRADES)")
        self.attack = attack

    @property
    def soft_labels(self) -> bool:  # type: ignore[override]
        """Soft labels (CutMix/MixUp): the training CE and the attack's CE both take them as
        class probabilities (Rebuffi et al. 2021); the margin loss needs class indices."""
        return self.attack.loss == "ce"

    def soft_label_refusal(self) -> Optional[str]:
        if self.soft_labels:
            return None
        return (f"PGDAT's attack.loss={self.attack.loss!r} needs class indices (the margin of the true class), which "
                f"mixed labels do not have; use --model.objective.init_args.attack.loss ce (the attack's CE takes soft "
                f"labels), or --data.mix none")

    def perturb(self, module: ClassifierModule, x: Tensor, y: Tensor) -> Tensor:
        return self.attack(module.model, x, y, check=check_batch(module))

    def loss_at(self, module: ClassifierModule, x: Tensor, x_adv: Tensor, y: Tensor) -> StepOutput:
        logits = module.model(x_adv)
        return StepOutput(F.cross_entropy(logits, y), adv_logits=logits)


def _clean_target(module: ClassifierModule, x: Tensor, mode: str) -> Tensor:
    """The softmax of the clean logits in the attack's mode (no gradient): TRADES' attack target."""
    with torch.no_grad(), module_mode(module.model, mode):
        return F.softmax(module.model(x).float(), dim=1)


class TRADES(PerturbationObjective):
    """TRADES (Zhang et al. 2019): ``CE(f(x), y) + beta * KL(f(x) || f(x'))``.

    The attack maximises ``KL(p || f(x'))`` where ``p`` is the softmax of the clean logits
    computed *in the attack's mode* (the official code: both in eval mode, so the attack
    objective is 0 at ``x' = x``), starting from ``x + 0.001 N(0, 1)`` (``start_sigma``).
    Default attack: the official one (eps 0.031, 10 steps of 0.007, eval mode). Soft labels
    (CutMix/MixUp) enter only the clean cross-entropy; the attack does not use labels.
    """

    soft_labels = True

    def __init__(self, beta: float = 6.0,
                 attack: PGD = PGD(eps=0.031, steps=10, step_size=0.007, random_start=False, start_sigma=0.001,
                                   bn_mode="eval")) -> None:
        self.beta = check_real("beta", beta, minimum=0.0)
        self.attack = training_attack(attack)

    def perturb(self, module: ClassifierModule, x: Tensor, y: Tensor) -> Tensor:
        target = _clean_target(module, x, self.attack.bn_mode)
        return self.attack(module.model, x, target, loss_fn=kl_loss, check=check_batch(module))

    def loss_at(self, module: ClassifierModule, x: Tensor, x_adv: Tensor, y: Tensor) -> StepOutput:
        logits_clean, logits_adv = module.model(x), module.model(x_adv)
        loss, robust = trades_loss(logits_clean, logits_adv, y, self.beta)
        return StepOutput(loss, adv_logits=logits_adv, clean_logits=logits_clean, logs={"trades_kl": robust.detach()})


class MART(PerturbationObjective):
    """MART (Wang et al. 2020): misclassification-aware adversarial training (:func:`mart_loss`).

    The attack maximises the cross-entropy, in eval mode, from ``x + 0.001 N(0, 1)`` as the
    official code (eps 8/255, 10 steps of 2/255); ``beta`` 6 is the official CIFAR-10 value.
    """

    def __init__(self, beta: float = 6.0,
                 attack: PGD = PGD(eps=8 / 255, steps=10, step_size=2 / 255, random_start=False, start_sigma=0.001,
                                   bn_mode="eval")) -> None:
        self.beta = check_real("beta", beta, minimum=0.0)
        self.attack = training_attack(attack)

    def perturb(self, module: ClassifierModule, x: Tensor, y: Tensor) -> Tensor:
        return self.attack(module.model, x, y, loss_fn=cross_entropy_loss, check=check_batch(module))

    def loss_at(self, module: ClassifierModule, x: Tensor, x_adv: Tensor, y: Tensor) -> StepOutput:
        logits_clean, logits_adv = module.model(x), module.model(x_adv)
        loss, robust = mart_loss(logits_clean, logits_adv, y, self.beta)
        return StepOutput(loss, adv_logits=logits_adv, clean_logits=logits_clean, logs={"mart_kl": robust.detach()})


class Free(FreeObjective[ClassifierModule]):
    """Free adversarial training (Shafahi et al. 2019): m = ``replays`` replays of each batch,
    one backward giving the parameter gradient and the ascent of the persistent perturbation
    (``step_size``, default ``eps``). Divide ``max_epochs`` and ``optim.milestones`` by m."""

    def __init__(self, eps: float = 8 / 255, norm: str = "linf", replays: int = 4,
                 step_size: Optional[float] = None) -> None:
        super().__init__(eps=eps, norm=norm, replays=replays, step_size=step_size)

    def replay_loss(self, module: ClassifierModule, x_in: Tensor, x: Tensor, y: Tensor, ctx: Any) -> tuple[Tensor, Tensor]:
        logits = module.model(x_in)
        return F.cross_entropy(logits, y), logits
