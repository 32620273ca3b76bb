"""Distillation from a frozen teacher (thesis chapter 4): the objective (KD, ARD, Fast-ARD) is a part.

:class:`KnowledgeDistillation` owns the teacher and hands each batch to its objective
(:mod:`lightning_adv.objectives`: ``KD`` on clean inputs, ``ARD``, ``FastARD`` in the
m-replay loop), which calls :meth:`KnowledgeDistillation.teacher_logits`.

Where the teacher lives: outside the module tree (a plain attribute set with
``object.__setattr__``), loaded in ``setup('fit')`` from ``teacher_checkpoint`` and moved
to the student's device and dtype on first use. It is therefore not in ``state_dict()``
(the student's checkpoint is the student's size and loads alone, without the teacher
file), not in ``parameters()`` (not optimised, not wrapped or synchronised by DDP), and
``module.train()`` never reaches it: it stays in eval mode, its BatchNorm statistics
untouched. Validating or testing a saved student needs no teacher.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

from ..objectives import KD, KL_REDUCTIONS, Objective, distillation_kl
from .classifier import BaseClassifier
from .objective_training import ObjectiveTraining, check_base_arguments, coerce_objective
from .teacher import check_teacher_args, freeze, load_teacher

__all__ = ["KnowledgeDistillation", "KL_REDUCTIONS", "distillation_kl"]


class KnowledgeDistillation(ObjectiveTraining, BaseClassifier):
    """A student distilled from a frozen teacher.

    Args (besides :class:`~lightning_adv.modules.classifier.BaseClassifier`'s, which describe the student):
        teacher_arch: registered architecture of the teacher (default ``wrn34_10``).
        teacher_checkpoint: its weights, loaded with ``weights_only=True`` when training
            starts (``setup('fit')``): a ``.ckpt`` of this project (its ``model.*`` keys),
            a raw state dict or a released TRADES / ARD state dict. Not needed to
            validate, test or load a saved student.
        teacher_arch_kwargs: further teacher architecture arguments (``depth``, ...); its
            classes and channels are the student's.
        teacher_mean, teacher_std: the teacher's own input normalisation (None: none, as
            the TRADES/ARD teachers, which take raw [0, 1] images).
        objective: ``KD`` (default; eq. 4.2), ``ARD`` (Definition 4.1) or ``FastARD``
            (Algorithm 2) from :mod:`lightning_adv.objectives`, with the temperature,
            alpha and KL reduction.
        track_clean_acc: ``train/acc`` from an extra eval-mode forward (Fast-ARD).

    A teacher already in memory can be given with :meth:`set_teacher` instead of a file.
    Logged: ``train/loss``, ``train/acc``, ``train/adv_acc`` (ARD, Fast-ARD) and
    :class:`BaseClassifier`'s validation/test metrics.
    """

    def __init__(
        self,
        teacher_arch: str = "wrn34_10",
        teacher_checkpoint: Optional[str] = None,
        teacher_arch_kwargs: Optional[dict[str, Any]] = None,
        teacher_mean: Optional[list[float]] = None,
        teacher_std: Optional[list[float]] = None,
        objective: Objective = KD(),
        track_clean_acc: bool = True,
        **kwargs: Any,
    ) -> None:
        objective = coerce_objective(objective, "classifier", teacher=True, module="KnowledgeDistillation")
        check_base_arguments(kwargs, type(self).__name__)
        check_teacher_args(teacher_arch, teacher_arch_kwargs, teacher_mean, teacher_std)
        super().__init__(**kwargs)
        object.__setattr__(self, "_teacher", None)  # outside the module tree, see the module doc
        self._init_objective(objective, track_clean_acc)

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
        """Data checks (:class:`BaseClassifier`), then, for ``fit``, load the teacher."""
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
