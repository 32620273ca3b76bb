"""Distillation objectives (thesis chapter 4): KD, ARD and Fast-ARD.

They run in :class:`~lightning_adv.modules.KnowledgeDistillation`, which owns the frozen
teacher and gives ``module.teacher_logits(x)`` (no gradient, eval mode).

* :class:`KD` (eq. 4.2): ``alpha t^2 KL(T^t(x) || S^t(x)) + (1 - alpha) CE(S(x), y)``.
* :class:`ARD` (Definition 4.1, Algorithm 1): the student, attacked, mimics the teacher's
  output on the clean input.
* :class:`FastARD` (Algorithm 2): ARD in the m-replay loop of free training.

``kl_reduction='elementwise_mean'`` (default) is the authors' ``nn.KLDivLoss()``: the KL
summed over batch and classes divided by ``B * C``, so the per-example KL enters with the
multiplier ``t^2 / C``; ``'batchmean'`` divides by ``B`` only. The thesis numbers came
from the elementwise mean.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..attacks import PGD, BN_MODES, cross_entropy_loss, kl_loss, module_mode
from ..validation import check_real
from .base import FreeObjective, Objective, StepOutput, check_batch, training_attack
from .protocols import TeacherModule

__all__ = ["KD", "ARD", "FastARD", "KL_REDUCTIONS", "distillation_kl"]

KL_REDUCTIONS = ("elementwise_mean", "batchmean")
TEACHER_INPUTS = ("clean", "adv")


def distillation_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float,
                    reduction: str = "elementwise_mean") -> Tensor:
    """``t^2 * KL(softmax(teacher / t) || softmax(student / t))``, reduced over the batch
    (``elementwise_mean == batchmean / C``); the teacher's logits are constants, the
    arithmetic float32."""
    if reduction not in KL_REDUCTIONS:
        raise ValueError(f"kl_reduction={reduction!r} is not one of {KL_REDUCTIONS}")
    t = float(temperature)
    target = F.softmax(teacher_logits.detach().float() / t, dim=-1)
    kl = kl_loss(student_logits / t, target).mean()
    if reduction == "elementwise_mean":
        kl = kl / student_logits.shape[-1]
    return t * t * kl


class KD(Objective[TeacherModule]):
    """Knowledge distillation (Hinton et al.; thesis eq. 4.2) on clean inputs.

    Args:
        temperature: ``t`` > 0 (thesis: 30 for CIFAR-10, 5 for CIFAR-100; defensive
            distillation: 100).
        alpha: weight of the distillation term in [0, 1] (thesis: 1).
        kl_reduction: ``'elementwise_mean'`` (authors) or ``'batchmean'``.
    """

    needs_teacher = True

    def __init__(self, temperature: float = 30.0, alpha: float = 1.0, kl_reduction: str = "elementwise_mean") -> None:
        self.temperature = check_real("temperature", temperature, positive=True)
        self.alpha = check_real("alpha", alpha, minimum=0.0, maximum=1.0,
                                hint="the weight of the distillation term; thesis: 1")
        if kl_reduction not in KL_REDUCTIONS:
            raise ValueError(f"kl_reduction={kl_reduction!r} is not one of {KL_REDUCTIONS}; 'elementwise_mean' "
                             f"reproduces the thesis (the authors' nn.KLDivLoss() default)")
        self.kl_reduction = kl_reduction

    def kd_term(self, student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
        return distillation_kl(student_logits, teacher_logits, self.temperature, self.kl_reduction)

    def distill_loss(self, student_logits: Tensor, teacher_logits: Tensor, y: Tensor,
                     clean_logits: Optional[Tensor] = None) -> Tensor:
        """``alpha t^2 KL(T^t || S^t) + (1 - alpha) CE(clean_logits or student_logits, y)``."""
        loss = self.alpha * self.kd_term(student_logits, teacher_logits) if self.alpha > 0 else None
        if self.alpha < 1:
            ce = F.cross_entropy(clean_logits if clean_logits is not None else student_logits, y)
            loss = (1 - self.alpha) * ce if loss is None else loss + (1 - self.alpha) * ce
        assert loss is not None
        return loss

    def step(self, module: TeacherModule, *batch: Tensor) -> StepOutput:
        x, y = batch
        logits = module.model(x)
        return StepOutput(self.distill_loss(logits, module.teacher_logits(x), y), clean_logits=logits)


class _ARDLoss(KD):
    """The ARD loss shared by :class:`ARD` and :class:`FastARD`::

        alpha t^2 KL(T^t(x or x') || S^t(x')) + (1 - alpha) CE(S(x), y) [+ w t^2 KL(T^t(x) || S^t(x))]
    """

    teacher_input: str = "clean"
    clean_kd_weight: float = 0.0

    def _check_ard(self, teacher_input: str, clean_kd_weight: float) -> None:
        if teacher_input not in TEACHER_INPUTS:
            raise ValueError(f"teacher_input={teacher_input!r} is not one of {TEACHER_INPUTS}")
        self.teacher_input = teacher_input
        self.clean_kd_weight = check_real("clean_kd_weight", clean_kd_weight, minimum=0.0)
        if self.alpha == 0:
            raise ValueError("alpha=0 leaves ARD without its adversarial term (the loss is the clean cross-entropy, "
                             "natural training); use alpha in (0, 1] (thesis: 1)")

    @property
    def clean_in_loss(self) -> bool:
        """Whether the student's clean logits enter the gradient (``alpha < 1`` or a clean KD term)."""
        return self.alpha < 1 or self.clean_kd_weight > 0

    def kl_target(self, module: TeacherModule, x_adv: Tensor, teacher_clean: Tensor) -> Tensor:
        return module.teacher_logits(x_adv) if self.teacher_input == "adv" else teacher_clean

    def ard_loss(self, logits_adv: Tensor, teacher_logits: Tensor, y: Tensor,
                 logits_clean: Optional[Tensor] = None, teacher_clean: Optional[Tensor] = None) -> Tensor:
        if self.clean_in_loss and logits_clean is None:
            raise ValueError("ard_loss needs the student's clean logits when alpha < 1 or clean_kd_weight > 0")
        loss = self.distill_loss(logits_adv, teacher_logits, y, logits_clean)
        if self.clean_kd_weight > 0:
            assert logits_clean is not None
            target = teacher_clean if teacher_clean is not None else teacher_logits
            loss = loss + self.clean_kd_weight * self.kd_term(logits_clean, target)
        return loss


def _tempered_ce(t: float) -> Callable[[Tensor, Tensor], Tensor]:
    return lambda logits, y: cross_entropy_loss(logits / t, y)


def _tempered_kl(t: float) -> Callable[[Tensor, Tensor], Tensor]:
    return lambda logits, target: kl_loss(logits / t, target)


class ARD(_ARDLoss):
    """Adversarially Robust Distillation (Definition 4.1, Algorithm 1).

    ``x'`` comes from ``attack`` maximising, per ``attack_loss``:

    * ``'ce'`` (default): the student's cross-entropy with the labels;
    * ``'kl'`` (section 4.9 ablation): ``KL(T^t(x) || S^t(x'))``.

    ``attack_temperature`` divides the student's logits inside the ``'ce'`` attack loss:
    1 (default) is what the authors' ``main.py`` does; Definition 4.1 literally writes
    ``L(S^t(X + delta), y)``, i.e. ``attack_temperature = temperature``. The clean student
    forward runs every step in train mode, as the authors' code (its logits give
    ``train/acc``); it enters the gradient only when ``alpha < 1`` or ``clean_kd_weight > 0``.
    """

    def __init__(self, temperature: float = 30.0, alpha: float = 1.0, kl_reduction: str = "elementwise_mean",
                 attack: PGD = PGD(eps=8 / 255, steps=10, step_size=2 / 255, bn_mode="train"),
                 attack_loss: str = "ce", attack_temperature: float = 1.0, teacher_input: str = "clean",
                 clean_kd_weight: float = 0.0) -> None:
        super().__init__(temperature=temperature, alpha=alpha, kl_reduction=kl_reduction)
        self._check_ard(teacher_input, clean_kd_weight)
        self.attack = training_attack(attack)
        if self.attack.loss != "ce":
            raise ValueError(f"attack.loss={self.attack.loss!r}: ARD chooses what the attack maximises with "
                             f"attack_loss (ce | kl); leave attack.loss at 'ce'")
        if attack_loss not in ("ce", "kl"):
            raise ValueError(f"attack_loss={attack_loss!r} is not one of ('ce', 'kl') (the student's cross-entropy, "
                             f"thesis default, or the KL to the teacher)")
        self.attack_loss = attack_loss
        self.attack_temperature = check_real("attack_temperature", attack_temperature, positive=True)

    def perturb(self, module: TeacherModule, x: Tensor, y: Tensor, teacher_clean: Tensor) -> Tensor:
        if self.attack_loss == "kl":
            target = F.softmax(teacher_clean.float() / self.temperature, dim=-1)
            return self.attack(module.model, x, target, loss_fn=_tempered_kl(self.temperature),
                               check=check_batch(module))
        return self.attack(module.model, x, y, loss_fn=_tempered_ce(self.attack_temperature), check=check_batch(module))

    def step(self, module: TeacherModule, *batch: Tensor) -> StepOutput:
        x, y = batch
        teacher_clean = module.teacher_logits(x)
        x_adv = self.perturb(module, x, y, teacher_clean)
        logits_adv = module.model(x_adv)
        with torch.set_grad_enabled(self.clean_in_loss and torch.is_grad_enabled()):
            logits_clean = module.model(x)
        loss = self.ard_loss(logits_adv, self.kl_target(module, x_adv, teacher_clean), y, logits_clean,
                             teacher_clean)
        return StepOutput(loss, adv_logits=logits_adv, clean_logits=logits_clean)


class FastARD(FreeObjective[TeacherModule], _ARDLoss):
    """Fast-ARD (Algorithm 2): the ARD loss in the m-replay loop of free training.

    ``delta`` lives in the ball ``eps``/``norm`` and moves by ``step_size`` (default eps)
    per replay, ascending per ``perturbation_loss``:

    * ``'ard'`` (default): the ARD loss itself, its input gradient from the same backward
      as the parameter gradient (free AT's trick, section 4.5.4); one student forward and
      backward per replay, the teacher once per batch;
    * ``'ce'``: the student's cross-entropy with the labels, as Algorithm 2's text says: an
      extra forward and input-gradient backward per replay (``ascent_bn_mode``: the
      student's mode for it).

    Divide ``max_epochs`` and ``optim.milestones`` by m (section 4.7).
    """

    def __init__(self, temperature: float = 30.0, alpha: float = 1.0, kl_reduction: str = "elementwise_mean",
                 eps: float = 8 / 255, norm: str = "linf", replays: int = 4, step_size: Optional[float] = None,
                 perturbation_loss: str = "ard", ascent_bn_mode: str = "train", teacher_input: str = "clean",
                 clean_kd_weight: float = 0.0) -> None:
        FreeObjective.__init__(self, eps=eps, norm=norm, replays=replays, step_size=step_size)
        KD.__init__(self, temperature=temperature, alpha=alpha, kl_reduction=kl_reduction)
        self._check_ard(teacher_input, clean_kd_weight)
        if perturbation_loss not in ("ard", "ce"):
            raise ValueError(f"perturbation_loss={perturbation_loss!r} is not one of ('ard', 'ce') ('ard': the same "
                             f"backward, 'ce': the student's cross-entropy, Algorithm 2's text)")
        if ascent_bn_mode not in BN_MODES:
            raise ValueError(f"ascent_bn_mode={ascent_bn_mode!r} is not one of {BN_MODES}")
        self.perturbation_loss, self.ascent_bn_mode = perturbation_loss, ascent_bn_mode

    @property
    def separate_ascent(self) -> bool:  # type: ignore[override]
        return self.perturbation_loss == "ce"

    def prepare(self, module: TeacherModule, x: Tensor, y: Tensor) -> Tensor:
        return module.teacher_logits(x)  # once per batch, shared by the m replays

    def replay_loss(self, module: TeacherModule, x_in: Tensor, x: Tensor, y: Tensor, ctx: Any) -> tuple[Tensor, Tensor]:
        logits_adv = module.model(x_in)
        logits_clean = module.model(x) if self.clean_in_loss else None
        return self.ard_loss(logits_adv, self.kl_target(module, x_in, ctx), y, logits_clean, ctx), logits_adv

    def ascent_loss(self, module: TeacherModule, x_in: Tensor, y: Tensor, ctx: Any) -> Tensor:
        with module_mode(module.model, self.ascent_bn_mode):
            return cross_entropy_loss(module.model(x_in), y).sum()
