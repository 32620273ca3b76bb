"""A purifier in front of a classifier, attacked both ways.

* :class:`Purified` is ``classifier(purifier(x))`` for any classifier; ``.undefended`` is the bare
  classifier. (Few-shot learners: :class:`~lightning_adv.modules.PurifiedFewShot`, whose adapted
  learners have the same shape.)
* :func:`adaptive_purifier` builds the purifier for the adaptive attack (Athalye et al. 2018): the
  non-differentiable step behind :class:`~lightning_adv.attacks.BPDA` (identity backward), so the
  suite's gradient attacks see the whole pipeline; EOT (``eot_samples``) averages over DefenseGAN's
  random restarts, drawn anew in every forward.
* :class:`PurifierUnaware` is the evaluation of the defenses' own papers (Samangouei et al.'s and
  Mustafa et al.'s white-box attacks see the classifier, not the defense): its inner attack runs on
  ``model.undefended``, and the suite scores the adversarial inputs through the defended model.
"""
from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

from ..attacks import BPDA, Attack, AttackOutput
from ..attacks.base import Model
from .defensegan import DefenseGAN
from .sr import SRDefense

__all__ = ["Purified", "PurifierUnaware", "adaptive_purifier"]


class Purified(nn.Module):
    """``classifier(purifier(x))``; ``undefended`` is the classifier alone (for :class:`PurifierUnaware`)."""

    def __init__(self, classifier: nn.Module, purifier: nn.Module) -> None:
        super().__init__()
        self.undefended = classifier
        self.purifier = purifier

    def forward(self, x: Tensor) -> Tensor:
        return self.undefended(self.purifier(x))


def adaptive_purifier(purifier: nn.Module) -> nn.Module:
    """The purifier with BPDA around its non-differentiable step (same forward, usable gradient).

    DefenseGAN: the whole projection behind BPDA (its true gradient is zero by construction, so the
    differentiability probe, a full projection, is skipped). SR defense: only the wavelet denoiser
    behind BPDA; the SR network is differentiated exactly. Anything else: BPDA with its own probe.
    """
    if isinstance(purifier, DefenseGAN):
        return BPDA(purifier, check_differentiable=False)
    if isinstance(purifier, SRDefense):
        denoiser = purifier.denoiser
        if not isinstance(denoiser, BPDA):
            denoiser = BPDA(denoiser)
        return SRDefense(purifier.sr_net, denoiser, resize_back=purifier.resize_back)
    return purifier if isinstance(purifier, BPDA) else BPDA(purifier)


class PurifierUnaware(Attack):
    """The defense papers' protocol: ``attack`` is computed on ``model.undefended`` (the classifier, or
    the learner adapted on the clean support, with no purifier); the suite then classifies the
    adversarial inputs with the defended model (purified support and purified queries).

    Args:
        attack: the attack on the undefended model (the thesis: PGD-20, 8/255, step 2/255).
        name: the report label (default ``<attack label>_unaware``).
    """

    def __init__(self, attack: Attack, name: Optional[str] = None) -> None:
        if not isinstance(attack, Attack):
            raise ValueError(f"PurifierUnaware.attack must be an Attack (lightning_adv.attacks), got {attack!r}")
        super().__init__(norm=attack.norm, eps=attack.eps, name=name, bn_mode=attack.bn_mode)
        self.attack = attack
        self.kind = "defense-unaware"
        self.targeted = attack.targeted

    def default_label(self) -> str:
        return f"{self.attack.label}_unaware"

    def _perturb(self, model: Model, x: Tensor, y: Tensor, targets: Optional[Tensor]) -> AttackOutput:
        target = getattr(model, "undefended", None)
        if target is None:
            raise ValueError(f"{self.label}: the model has no `undefended` attribute; PurifierUnaware attacks the "
                             f"classifier behind a purifier (lightning_adv.defenses.Purified, or the learners of "
                             f"PurifiedFewShot)")
        return self.attack._perturb(target, x, y, targets)
