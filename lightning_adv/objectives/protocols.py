"""What an objective may use of the module that runs it: the contract between objectives and modules.

An objective reads nothing else of its module. :class:`ClassifierModule` is what ``AdvTraining``
and ``CertifiedTraining`` give (PGD-AT, TRADES, MART, AWP, free AT, IBP, CROWN-IBP),
:class:`TeacherModule` what ``KnowledgeDistillation`` adds (KD, ARD, Fast-ARD) and
:class:`EpisodicModule` what ``AdversarialQuerying`` gives (MetaNatural, AQ, MetaTRADES, ADML).
The modules satisfy them structurally (``tests/test_contracts.py`` checks each).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Protocol, runtime_checkable

from torch import Tensor, nn

from ..attacks import PGD, LossFn

if TYPE_CHECKING:
    from ..meta import Learner

__all__ = ["TrainedModule", "ClassifierModule", "TeacherModule", "EpisodicModule"]


@runtime_checkable
class TrainedModule(Protocol):
    """Every module: the trainer's counters (0 outside a Trainer)."""

    @property
    def current_epoch(self) -> int: ...

    @property
    def global_step(self) -> int: ...


@runtime_checkable
class ClassifierModule(TrainedModule, Protocol):
    """A classifier module: the trained network, and whether a training attack checks this batch's range."""

    model: nn.Module
    #: False inside a training step after the epoch's first batch (the [0, 1] check is a host-device sync)
    check_attack_inputs: bool


@runtime_checkable
class TeacherModule(ClassifierModule, Protocol):
    """A classifier module with a frozen teacher (distillation)."""

    def teacher_logits(self, x: Tensor) -> Tensor: ...


@runtime_checkable
class EpisodicModule(TrainedModule, Protocol):
    """A few-shot module: a learner adapted per task, and the attack on a stack of task sets through it."""

    learner: Learner

    def adapt(self, support_x: Tensor, support_y: Tensor, adv_support: Optional[PGD] = None) -> nn.Module: ...

    def attack_tasks(self, learner: nn.Module, x: Tensor, target: Tensor, attack: PGD, loss_fn: LossFn) -> Tensor: ...
