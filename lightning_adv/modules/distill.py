"""Knowledge distillation, ARD and Fast-ARD (thesis chapter 4, Goldblum et al. 2020).

* :class:`KnowledgeDistillation`: the student mimics a frozen teacher on clean inputs
  (eq. 4.2; the baseline of tables 4.2-4.5 and 4.12-4.14).
* :class:`ARD`: Adversarially Robust Distillation (Definition 4.1, Algorithm 1): the
  student, attacked, mimics the teacher's output on the clean input.
* :class:`FastARD`: ARD with free adversarial training (Algorithm 2): m replays of each
  batch with a persistent perturbation (:class:`~lightning_adv.modules.FreeReplay`).

Where the teacher lives: outside the module tree (a plain attribute set with
``object.__setattr__``), loaded in ``setup('fit')`` from ``teacher_checkpoint`` and moved
to the student's device and dtype on first use. It is therefore not in ``state_dict()``
(the student's checkpoint is the student's size and loads alone, without the teacher
file), not in ``parameters()`` (not optimised, not wrapped or synchronised by DDP), and
``module.train()`` never reaches it: it stays in eval mode, its BatchNorm statistics
untouched. Validating or testing a saved student needs no teacher.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

from ..attacks import PGD, cross_entropy_loss, kl_loss, module_mode
from .classifier import Classifier
from .optim import OptimConfig
from .robust import RobustTrainingMixin, check_free_args, check_unused_attack_args
from .teacher import check_teacher_args, freeze, load_teacher

__all__ = [
    "ARD", "FastARD", "KnowledgeDistillation", "KL_REDUCTIONS", "ATTACK_LOSSES_ARD", "TEACHER_INPUTS",
    "PERTURBATION_LOSSES", "distillation_kl",
]

KL_REDUCTIONS = ("elementwise_mean", "batchmean")
ATTACK_LOSSES_ARD = ("ce", "kl")
TEACHER_INPUTS = ("clean", "adv")
PERTURBATION_LOSSES = ("ard", "ce")


def distillation_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float,
                    reduction: str = "elementwise_mean") -> Tensor:
    """``t^2 * KL(softmax(teacher / t) || softmax(student / t))``, reduced over the batch.

    ``reduction``:

    * ``"elementwise_mean"``: the sum over the batch and the classes divided by ``B * C``;
      what the authors' ``nn.KLDivLoss()`` (default reduction) computes;
    * ``"batchmean"``: the sum divided by ``B``, the mean per-example KL divergence.

    So ``elementwise_mean == batchmean / C``. The teacher's logits are treated as
    constants; the arithmetic is in float32 (:func:`~lightning_adv.attacks.kl_loss`).
    """
    if reduction not in KL_REDUCTIONS:
        raise ValueError(f"kl_reduction={reduction!r} is not one of {KL_REDUCTIONS}")
    t = float(temperature)
    target = F.softmax(teacher_logits.detach().float() / t, dim=-1)
    kl = kl_loss(student_logits / t, target).mean()
    if reduction == "elementwise_mean":
        kl = kl / student_logits.shape[-1]
    return t * t * kl


def _tempered_kl(temperature: float) -> Callable[[Tensor, Tensor], Tensor]:
    """Per-example ``KL(target || softmax(logits / t))``: the ARD attack's ``attack_loss='kl'``."""
    return lambda logits, target_probs: kl_loss(logits / temperature, target_probs)


class KnowledgeDistillation(Classifier):
    """Knowledge distillation (Hinton et al.) from a frozen teacher, on clean inputs.

    Loss (thesis eq. 4.2, as the authors' code computes it)::

        alpha * t^2 * KL(T^t(x) || S^t(x)) + (1 - alpha) * CE(S(x), y)

    where ``S^t``/``T^t`` are the softmax of the student's / teacher's logits divided by
    the temperature ``t``; the cross-entropy is on the plain logits (no temperature).

    **KL reduction.** ``kl_reduction='elementwise_mean'`` (default) is the authors'
    ``nn.KLDivLoss()``: the KL summed over batch and classes, divided by ``B * C``.
    ``'batchmean'`` divides by ``B`` only (the true mean KL). With ``t = 30`` on CIFAR-10
    (C = 10) the elementwise mean is the batchmean times 1/10: the per-example KL enters
    the loss with the multiplier ``t^2 / C = 900 / 10 = 90`` (batchmean: 900). In general
    the effective multiplier is ``t^2 / C`` (CIFAR-100 with t = 30: 9). The published
    numbers of chapter 4 came from the elementwise mean, so the thesis configs use
    ``kl_reduction: elementwise_mean``; with ``batchmean`` the KL gradient is C times
    larger, which with SGD at lr 0.1 is a different (much larger) step.

    Args (besides :class:`Classifier`'s, which describe the student):
        teacher_arch: registered architecture of the teacher (default ``wrn34_10``).
        teacher_checkpoint: its weights, loaded with ``weights_only=True`` when training
            starts (``setup('fit')``): a ``.ckpt`` of this project (its ``model.*`` keys),
            a raw state dict or a released TRADES / ARD state dict. Not needed to
            validate, test or load a saved student.
        teacher_arch_kwargs: further teacher architecture arguments (``depth``, ...); its
            classes and channels are the student's.
        teacher_mean, teacher_std: the teacher's own input normalisation (None: none, as
            the TRADES/ARD teachers, which take raw [0, 1] images).
        temperature: ``t`` > 0 (thesis: 30 for CIFAR-10, 5 for CIFAR-100).
        alpha: weight of the distillation term, in [0, 1] (thesis default 1).
        kl_reduction: ``'elementwise_mean'`` (authors, default) or ``'batchmean'``.

    A teacher already in memory can be given with :meth:`set_teacher` instead of a file.
    Logged: ``train/loss``, ``train/acc`` and :class:`Classifier`'s validation/test metrics.
    """

    def __init__(
        self,
        arch: str = "small_cnn",
        num_classes: int = 10,
        in_channels: int = 3,
        mean: Optional[list[float]] = None,
        std: Optional[list[float]] = None,
        arch_kwargs: Optional[dict[str, Any]] = None,
        optim: OptimConfig = OptimConfig(),
        init_weights: Optional[str] = None,
        teacher_arch: str = "wrn34_10",
        teacher_checkpoint: Optional[str] = None,
        teacher_arch_kwargs: Optional[dict[str, Any]] = None,
        teacher_mean: Optional[list[float]] = None,
        teacher_std: Optional[list[float]] = None,
        temperature: float = 30.0,
        alpha: float = 1.0,
        kl_reduction: str = "elementwise_mean",
    ) -> None:
        if isinstance(temperature, bool) or not math.isfinite(float(temperature)) or temperature <= 0:
            raise ValueError(f"temperature must be a finite number > 0 (thesis: 30 for CIFAR-10), "
                             f"got temperature={temperature}")
        if isinstance(alpha, bool) or not 0.0 <= float(alpha) <= 1.0:
            raise ValueError(f"alpha must be in [0, 1] (weight of the distillation term; thesis: 1), got alpha={alpha}")
        if kl_reduction not in KL_REDUCTIONS:
            raise ValueError(f"kl_reduction={kl_reduction!r} is not one of {KL_REDUCTIONS}; 'elementwise_mean' "
                             f"reproduces the thesis (the authors' nn.KLDivLoss() default)")
        check_teacher_args(teacher_arch, teacher_arch_kwargs, teacher_mean, teacher_std)
        super().__init__(arch=arch, num_classes=num_classes, in_channels=in_channels, mean=mean, std=std,
                         arch_kwargs=arch_kwargs, optim=optim, init_weights=init_weights)
        self.temperature = float(temperature)
        self.alpha = float(alpha)
        self.kl_reduction = kl_reduction
        object.__setattr__(self, "_teacher", None)  # outside the module tree, see the module doc

    # ------------------------------------------------------------------ teacher
    @property
    def teacher(self) -> nn.Module:
        """The frozen teacher (loaded when training starts, or given with :meth:`set_teacher`)."""
        teacher = self.__dict__.get("_teacher")
        if teacher is None:
            raise RuntimeError(
                f"{type(self).__name__} has no teacher yet: it is loaded from teacher_checkpoint in "
                f"setup('fit') (trainer.fit), or given with set_teacher(module)"
            )
        return teacher

    @property
    def has_teacher(self) -> bool:
        return self.__dict__.get("_teacher") is not None

    def set_teacher(self, teacher: nn.Module) -> None:
        """Use ``teacher`` (frozen here) instead of loading ``teacher_checkpoint``.

        It is kept outside the module tree: not saved in the student's checkpoint, not
        optimised, not moved by ``.to()`` (it follows the inputs' device on use).
        """
        if not isinstance(teacher, nn.Module):
            raise ValueError(f"the teacher must be an nn.Module, got {type(teacher).__name__}")
        classes = getattr(teacher, "num_classes", None)
        if isinstance(classes, int) and classes != self.num_classes:
            raise ValueError(f"the teacher has num_classes={classes}, the student (model.num_classes) "
                             f"{self.num_classes}: distillation needs a teacher of the student's classes")
        object.__setattr__(self, "_teacher", freeze(teacher))

    def setup(self, stage: str) -> None:
        """Data checks (:class:`Classifier`), then, for ``fit``, load the teacher."""
        super().setup(stage)
        if stage == "fit" and not self.has_teacher:
            hp = self.hparams
            self.set_teacher(load_teacher(
                hp.teacher_arch, hp.teacher_checkpoint, num_classes=hp.num_classes, in_channels=hp.in_channels,
                mean=hp.teacher_mean, std=hp.teacher_std, arch_kwargs=hp.teacher_arch_kwargs,
            ))
            n = sum(p.numel() for p in self.teacher.parameters())
            rank_zero_info(f"teacher {hp.teacher_arch} ({n / 1e6:.2f}M parameters, frozen, not saved with the "
                           f"student) loaded from {hp.teacher_checkpoint}")

    @torch.no_grad()
    def teacher_logits(self, x: Tensor) -> Tensor:
        """The teacher's logits on ``x`` (no gradient, eval mode, on ``x``'s device/dtype)."""
        teacher = self.teacher
        if teacher.training:
            teacher.eval()
        p = next(teacher.parameters(), None)
        if p is not None and (p.device != x.device or (x.is_floating_point() and p.dtype != x.dtype)):
            teacher.to(device=x.device, dtype=x.dtype if x.is_floating_point() else None)
        return teacher(x)

    # ------------------------------------------------------------------ losses
    def kd_term(self, student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
        """``t^2 KL(T^t || S^t)`` with this module's temperature and reduction."""
        return distillation_kl(student_logits, teacher_logits, self.temperature, self.kl_reduction)

    def distill_loss(self, student_logits: Tensor, teacher_logits: Tensor, y: Tensor,
                     clean_logits: Optional[Tensor] = None) -> Tensor:
        """``alpha t^2 KL(T^t || S^t) + (1 - alpha) CE(clean_logits, y)``.

        ``clean_logits`` (the student on clean inputs) defaults to ``student_logits``; it
        is only used when ``alpha < 1``.
        """
        loss = self.alpha * self.kd_term(student_logits, teacher_logits) if self.alpha > 0 else None
        if self.alpha < 1:
            ce = F.cross_entropy(clean_logits if clean_logits is not None else student_logits, y)
            loss = (1 - self.alpha) * ce if loss is None else loss + (1 - self.alpha) * ce
        assert loss is not None
        return loss

    def objective(self, logits: Tensor, x: Tensor, y: Tensor) -> Tensor:
        return self.distill_loss(logits, self.teacher_logits(x), y)


class ARD(RobustTrainingMixin, KnowledgeDistillation):
    """Adversarially Robust Distillation (thesis Definition 4.1, Algorithm 1).

    Loss, as the authors' code computes it::

        alpha * t^2 * KL(T^t(x) || S^t(x + delta)) + (1 - alpha) * CE(S(x), y)
        [+ clean_kd_weight * t^2 * KL(T^t(x) || S^t(x))]

    The teacher sees the clean ``x``; ``delta`` comes from ``attack`` maximising the
    student's cross-entropy with the true labels (default the thesis': PGD Linf 8/255,
    10 steps of 2/255, random start, the student in train mode while attacked, as in the
    authors' code: its BatchNorm statistics see the attack's batches). The cross-entropy
    term is on the clean student logits without temperature. As in the authors' code the
    clean student forward runs in every step (train mode, so one more BatchNorm update),
    its logits giving ``train/acc``; it enters the gradient only when ``alpha < 1`` or
    ``clean_kd_weight > 0``.

    Ablations of thesis section 4.9:

    * ``attack_loss='kl'``: the attack maximises ``KL(T^t(x) || S^t(x + delta))`` instead;
    * ``teacher_input='adv'``: the KL target is the teacher on ``x + delta``;
    * ``clean_kd_weight > 0``: an extra clean distillation term with that weight.

    The PGD config's own ``loss`` must stay ``'ce'``: ARD chooses the objective with
    ``attack_loss``. ``alpha=0`` is refused (no adversarial term is left: the authors'
    code then trains naturally on clean data).

    Logged: ``train/loss``, ``train/acc`` (clean, train-mode logits), ``train/adv_acc``,
    ``lr`` and :class:`Classifier`'s validation/test metrics.
    """

    def __init__(
        self,
        arch: str = "small_cnn",
        num_classes: int = 10,
        in_channels: int = 3,
        mean: Optional[list[float]] = None,
        std: Optional[list[float]] = None,
        arch_kwargs: Optional[dict[str, Any]] = None,
        optim: OptimConfig = OptimConfig(),
        init_weights: Optional[str] = None,
        teacher_arch: str = "wrn34_10",
        teacher_checkpoint: Optional[str] = None,
        teacher_arch_kwargs: Optional[dict[str, Any]] = None,
        teacher_mean: Optional[list[float]] = None,
        teacher_std: Optional[list[float]] = None,
        temperature: float = 30.0,
        alpha: float = 1.0,
        kl_reduction: str = "elementwise_mean",
        attack: PGD = PGD(eps=8 / 255, steps=10, step_size=2 / 255, bn_mode="train"),
        attack_loss: str = "ce",
        teacher_input: str = "clean",
        clean_kd_weight: float = 0.0,
    ) -> None:
        attack = PGD.coerce(attack)
        if attack.loss != "ce":
            raise ValueError(f"attack.loss={attack.loss!r}: ARD chooses what the attack maximises with attack_loss "
                             f"({' | '.join(ATTACK_LOSSES_ARD)}); leave attack.loss at 'ce'")
        if attack_loss not in ATTACK_LOSSES_ARD:
            raise ValueError(f"attack_loss={attack_loss!r} is not one of {ATTACK_LOSSES_ARD} (the student's "
                             f"cross-entropy, thesis default, or the KL to the teacher)")
        if teacher_input not in TEACHER_INPUTS:
            raise ValueError(f"teacher_input={teacher_input!r} is not one of {TEACHER_INPUTS}")
        if isinstance(clean_kd_weight, bool) or not math.isfinite(float(clean_kd_weight)) or clean_kd_weight < 0:
            raise ValueError(f"clean_kd_weight must be >= 0, got clean_kd_weight={clean_kd_weight}")
        if alpha == 0:
            raise ValueError("alpha=0 leaves ARD without its adversarial term (the loss is the clean cross-entropy, "
                             "natural training); use alpha in (0, 1] (thesis: 1)")
        super().__init__(arch=arch, num_classes=num_classes, in_channels=in_channels, mean=mean, std=std,
                         arch_kwargs=arch_kwargs, optim=optim, init_weights=init_weights,
                         teacher_arch=teacher_arch, teacher_checkpoint=teacher_checkpoint,
                         teacher_arch_kwargs=teacher_arch_kwargs, teacher_mean=teacher_mean,
                         teacher_std=teacher_std, temperature=temperature, alpha=alpha, kl_reduction=kl_reduction)
        self.hparams["attack"] = attack.config()
        self.attack = attack
        self.attack_loss = attack_loss
        self.teacher_input = teacher_input
        self.clean_kd_weight = float(clean_kd_weight)
        self._init_robust()

    @property
    def clean_in_loss(self) -> bool:
        """Whether the student's clean logits enter the gradient (``alpha < 1`` or a clean KD term)."""
        return self.alpha < 1 or self.clean_kd_weight > 0

    def ard_loss(self, logits_adv: Tensor, teacher_logits: Tensor, y: Tensor,
                 logits_clean: Optional[Tensor] = None, teacher_clean: Optional[Tensor] = None) -> Tensor:
        """The ARD loss; ``logits_clean`` is needed when :attr:`clean_in_loss`.

        ``teacher_logits`` is the KL target (the teacher on the clean input, or on the
        perturbed one with ``teacher_input='adv'``); ``teacher_clean`` the clean KD
        term's target (default ``teacher_logits``).
        """
        if self.clean_in_loss and logits_clean is None:
            raise ValueError("ard_loss needs the student's clean logits when alpha < 1 or clean_kd_weight > 0")
        loss = self.distill_loss(logits_adv, teacher_logits, y, logits_clean)
        if self.clean_kd_weight > 0:
            assert logits_clean is not None
            target = teacher_clean if teacher_clean is not None else teacher_logits
            loss = loss + self.clean_kd_weight * self.kd_term(logits_clean, target)
        return loss

    def perturb(self, x: Tensor, y: Tensor, teacher_clean: Tensor) -> Tensor:
        """``x + delta`` from :attr:`attack` maximising the student's CE (or the tempered KL)."""
        if self.attack_loss == "kl":
            target = F.softmax(teacher_clean.float() / self.temperature, dim=-1)
            return self.attack(self.model, x, target, loss_fn=_tempered_kl(self.temperature))
        return self.attack(self.model, x, y, loss_fn=cross_entropy_loss)

    def _kl_target(self, x_in: Tensor, teacher_clean: Tensor) -> Tensor:
        return self.teacher_logits(x_in) if self.teacher_input == "adv" else teacher_clean

    def training_step(self, batch: Any, batch_idx: int) -> Optional[Tensor]:
        x, y = batch
        teacher_clean = self.teacher_logits(x)
        x_adv = self.perturb(x, y, teacher_clean)
        logits_adv = self.model(x_adv)
        with torch.set_grad_enabled(self.clean_in_loss):
            logits_clean = self.model(x)
        loss = self.ard_loss(logits_adv, self._kl_target(x_adv, teacher_clean), y, logits_clean, teacher_clean)
        self._log_clean_acc(logits_clean, y)
        self._log_adv_step(loss, logits_adv, y)
        return loss


class FastARD(ARD):
    """Fast-ARD: ARD with free adversarial training (thesis Algorithm 2).

    Each batch is replayed m = ``free_replays`` times with a perturbation ``delta`` that
    persists across replays, batches and epochs (:class:`FreeReplay`, zero at the start,
    in ``attack``'s ball; only ``attack.eps``, ``attack.norm`` and, for
    ``perturbation_loss='ce'``, ``attack.bn_mode`` are used). Each replay the optimiser
    steps once on the ARD loss at ``x + delta`` (manual optimisation: ``global_step``
    advances m per batch; the LR schedule is stepped once per epoch). Divide
    ``max_epochs`` and ``optim.milestones`` by m in the config (thesis section 4.7:
    200/m epochs, decays at 100/m and 150/m). The perturbation is saved in checkpoints.

    ``perturbation_loss`` chooses what ``delta`` ascends, by ``free_step_size``
    (default eps) per replay:

    * ``'ard'`` (default): the ARD loss itself, its input gradient taken from the same
      backward as the parameter gradient (free-AT's trick; thesis 4.5.4: "we
      simultaneously compute the gradient of the loss with respect to the image and
      parameters using the same backward pass"). A replay costs one student forward and
      backward, so an epoch of m replays costs m KD epochs and the run (epochs / m) what
      KD costs; the teacher runs once per batch (its clean logits are reused by the m
      replays), i.e. 1/m of KD's teacher forwards;
    * ``'ce'``: the student's cross-entropy with the labels, as Algorithm 2's text says:
      each replay first moves ``delta`` one step up the CE (an extra student forward and
      input-gradient backward), then trains at the new point: about twice the cost.

    ``train/acc`` comes from an extra no-grad eval-mode forward per batch
    (``track_clean_acc``). ``attack_loss`` must stay ``'ce'`` (``perturbation_loss``
    chooses the objective here).
    """

    def __init__(
        self,
        arch: str = "small_cnn",
        num_classes: int = 10,
        in_channels: int = 3,
        mean: Optional[list[float]] = None,
        std: Optional[list[float]] = None,
        arch_kwargs: Optional[dict[str, Any]] = None,
        optim: OptimConfig = OptimConfig(),
        init_weights: Optional[str] = None,
        teacher_arch: str = "wrn34_10",
        teacher_checkpoint: Optional[str] = None,
        teacher_arch_kwargs: Optional[dict[str, Any]] = None,
        teacher_mean: Optional[list[float]] = None,
        teacher_std: Optional[list[float]] = None,
        temperature: float = 30.0,
        alpha: float = 1.0,
        kl_reduction: str = "elementwise_mean",
        attack: PGD = PGD(eps=8 / 255, steps=10, step_size=2 / 255, bn_mode="train"),
        attack_loss: str = "ce",
        teacher_input: str = "clean",
        clean_kd_weight: float = 0.0,
        free_replays: int = 4,
        free_step_size: Optional[float] = None,
        perturbation_loss: str = "ard",
        track_clean_acc: bool = True,
    ) -> None:
        if perturbation_loss not in PERTURBATION_LOSSES:
            raise ValueError(f"perturbation_loss={perturbation_loss!r} is not one of {PERTURBATION_LOSSES} "
                             f"('ard': the same backward, 'ce': the student's cross-entropy, Algorithm 2's text)")
        if attack_loss != "ce":
            raise ValueError(f"attack_loss={attack_loss!r}: Fast-ARD's perturbation objective is perturbation_loss "
                             f"({' | '.join(PERTURBATION_LOSSES)}); leave attack_loss at 'ce'")
        check_free_args(free_replays, free_step_size)
        attack = PGD.coerce(attack)
        check_unused_attack_args(FastARD, attack, ("eps", "norm") + (("bn_mode",) if perturbation_loss == "ce" else ()),
                                 f"Fast-ARD (free replays; perturbation_loss={perturbation_loss!r})")
        super().__init__(arch=arch, num_classes=num_classes, in_channels=in_channels, mean=mean, std=std,
                         arch_kwargs=arch_kwargs, optim=optim, init_weights=init_weights,
                         teacher_arch=teacher_arch, teacher_checkpoint=teacher_checkpoint,
                         teacher_arch_kwargs=teacher_arch_kwargs, teacher_mean=teacher_mean,
                         teacher_std=teacher_std, temperature=temperature, alpha=alpha, kl_reduction=kl_reduction,
                         attack=attack, attack_loss=attack_loss, teacher_input=teacher_input,
                         clean_kd_weight=clean_kd_weight)
        self.perturbation_loss = perturbation_loss
        self.track_clean_acc = bool(track_clean_acc)
        self._init_free(self.attack.threat, free_replays, free_step_size)

    def training_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        teacher_clean = self.teacher_logits(x)  # once per batch, shared by the m replays

        def closure(x_in: Tensor) -> tuple[Tensor, Tensor]:
            logits_adv = self.model(x_in)
            logits_clean = self.model(x) if self.clean_in_loss else None
            loss = self.ard_loss(logits_adv, self._kl_target(x_in, teacher_clean), y, logits_clean, teacher_clean)
            return loss, logits_adv

        def ce_ascent(x_in: Tensor) -> Tensor:
            with module_mode(self.model, self.attack.bn_mode):
                return cross_entropy_loss(self.model(x_in), y).sum()

        self._free_step(x, y, closure, ce_ascent if self.perturbation_loss == "ce" else None)
