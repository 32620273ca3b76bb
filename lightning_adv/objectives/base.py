"""The one way to choose a training objective: a small typed object a module takes.

An :class:`Objective` says three things about a training step, and nothing else:

* what the attack maximises (its ``attack`` and the loss it passes to ``attack.run``);
* what the model minimises (:meth:`Objective.step`, or :meth:`FreeObjective.replay_loss`);
* whether the m-replay loop of free training runs (:class:`FreeObjective`).

Modules are thin: ``AdvTraining`` and ``KnowledgeDistillation`` hand a ``(x, y)`` batch to
``objective.step(module, x, y)`` (or to the replay loop), ``AdversarialQuerying`` hands a
batch of tasks to ``objective.step(module, batch)``; they log what comes back. A new method
is one subclass here plus a config::

    model:
      class_path: lightning_adv.modules.AdvTraining
      init_args:
        objective:
          class_path: lightning_adv.objectives.TRADES
          init_args: {beta: 6.0, attack: {eps: 0.031, steps: 10, step_size: 0.007}}

Objectives hold no parameters and no state that a checkpoint must carry (free training's
perturbation is the module's :class:`~lightning_adv.modules.FreeReplay`); their
:meth:`~Objective.config` (class path + constructor arguments) is what checkpoints store.
"""
from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from typing import Any, Generic, Optional, TypeVar

from torch import Tensor

from ..attacks import PGD, Attack, ThreatModel, make_threat
from ..validation import check_int, check_real, check_step_size
from .protocols import ClassifierModule, TrainedModule

__all__ = ["Objective", "FreeObjective", "StepOutput", "check_batch", "training_attack", "KINDS"]

#: the module an objective runs in (``objectives/protocols.py``): what its methods may use of it
ModuleT = TypeVar("ModuleT", bound=TrainedModule, contravariant=True)

#: what an objective trains: a classifier on ``(x, y)`` batches or a meta-learner on task batches
KINDS = ("classifier", "episodic")


def check_batch(module: ClassifierModule) -> bool:
    """Whether a training attack checks this batch's range: always, except inside a module's training
    step after the epoch's first batch (``check_attack_inputs`` False; the check is a host-device sync)."""
    return module.check_attack_inputs


def training_attack(value: Any, param: str = "attack") -> PGD:
    """The training attack of an objective: a :class:`PGD` (or a mapping of its arguments) with
    ``eps > 0`` (``eps 0`` would be natural training labelled adversarial; it stays legitimate for an
    evaluation attack, as a sanity check that equals clean accuracy)."""
    attack = PGD.coerce(value, param)
    if not attack.eps or attack.eps <= 0:
        raise ValueError(f"{param}.eps={attack.eps!r}: a training attack needs eps > 0 (eps 0 is natural training; "
                         f"use the Classifier module for that, or e.g. {param}.eps 0.031 = 8/255)")
    return attack


@dataclass
class StepOutput:
    """What one training step gives the module to optimise and log.

    ``adv_logits``: outputs on the training perturbations (``train/adv_acc``; None when the
    objective perturbs nothing). ``clean_logits``: outputs on clean inputs computed anyway
    (``train/acc``; None: the module runs a no-grad eval forward if it tracks clean
    accuracy). ``logs``: further scalars, logged as ``train/<name>`` per epoch.
    """

    loss: Tensor
    adv_logits: Optional[Tensor] = None
    clean_logits: Optional[Tensor] = None
    logs: dict[str, Tensor] = field(default_factory=dict)


class Objective(Generic[ModuleT]):
    """Base of every training objective (see the module doc).

    Subclasses set :attr:`kind`, :attr:`needs_teacher`, implement :meth:`step`, and keep
    every constructor argument as an attribute of the same name (that is :meth:`config`).
    ``ModuleT`` is the protocol of what they use of their module (``objectives/protocols.py``).
    """

    kind: str = "classifier"
    #: the module must give ``teacher_logits(x)`` (distillation)
    needs_teacher: bool = False
    #: runs the m-replay loop (manual optimisation) instead of :meth:`step`
    free: bool = False
    #: trains on soft labels ``(B, C)`` (CutMix / MixUp batches, ``data.mix``); others are refused
    soft_labels: bool = False

    def soft_label_refusal(self) -> Optional[str]:
        """Why this objective cannot train on soft labels (``data.mix``) and what would, or None when it can."""
        if self.soft_labels:
            return None
        return (f"the objective {type(self).__name__} needs hard labels; use --data.mix none, or the objective "
                f"PGDAT or TRADES (docs/training-options.md)")

    def step(self, module: ModuleT, *batch: Tensor) -> StepOutput:
        """The loss of one batch (``module.model`` is the trained network)."""
        raise NotImplementedError

    def after_batch(self, module: ModuleT) -> None:
        """Called right after the batch's optimiser step, before the callbacks' batch-end hooks (AWP restores
        the weights here), and again at the batch's end (no effect once restored)."""

    def check_module(self, module: ModuleT) -> None:
        """Refuse a module this objective cannot train (called at the end of its constructor)."""

    # ----------------------------------------------------------------- configs
    def config(self) -> dict[str, Any]:
        """``class_path`` + ``init_args`` (nested attacks and objectives as their own configs)."""
        params = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        args = {}
        for p in params:
            v = getattr(self, p)
            args[p] = v.config() if isinstance(v, (Attack, Objective)) else v
        cls = type(self)
        return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": args}

    @classmethod
    def coerce(cls, value: Any, param: str = "objective") -> "Objective[Any]":
        """An objective from an instance or a ``class_path``/``init_args`` mapping (a checkpoint's)."""
        if isinstance(value, dict):
            if "class_path" not in value:
                raise ValueError(f"{param} must name its class: {{class_path: lightning_adv.objectives.<Name>, "
                                 f"init_args: {{...}}}}, got keys {sorted(value)}")
            module_name, _, cls_name = str(value["class_path"]).rpartition(".")
            try:
                klass = getattr(importlib.import_module(module_name), cls_name, None)
            except ImportError:
                klass = None
            if not (isinstance(klass, type) and issubclass(klass, Objective)):
                raise ValueError(f"{param}.class_path={value['class_path']!r} is not an objective of "
                                 f"lightning_adv.objectives")
            try:
                value = klass(**dict(value.get("init_args") or {}))
            except TypeError as err:
                accepted = [p for p in inspect.signature(klass.__init__).parameters if p != "self"]
                raise ValueError(f"{param}: {err}; {cls_name} takes {accepted}") from None
        if not isinstance(value, cls):
            raise ValueError(f"{param} must be a {cls.__name__} (lightning_adv.objectives), got {type(value).__name__}")
        return value

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config()["init_args"].items())
        return f"{type(self).__name__}({args})"


class FreeObjective(Objective[ModuleT]):
    """An objective trained by the m-replay loop of free training (Shafahi et al.).

    Each batch is replayed ``replays`` times with a perturbation that persists across
    replays, batches and epochs, in the ball of radius ``eps`` (``norm``), moved by
    ``step_size`` (default ``eps``) per replay. The module switches to manual
    optimisation and runs :class:`~lightning_adv.modules.FreeReplay` with
    :meth:`replay_loss` (and :meth:`ascent_loss` when :attr:`separate_ascent`).
    """

    free = True
    #: delta ascends :meth:`ascent_loss` (an extra forward/backward) instead of the training loss
    separate_ascent: bool = False

    def __init__(self, eps: float = 8 / 255, norm: str = "linf", replays: int = 4,
                 step_size: Optional[float] = None) -> None:
        make_threat(norm, eps)
        check_real("eps", eps, positive=True)  # free training with eps 0 would be natural training
        check_int("replays", replays, 1, "m, the replays of each batch (Shafahi et al.: 8 on CIFAR)", whole_floats=True)
        if step_size is not None:  # the perturbation persists: any number of steps, bounded by the ball's diameter
            check_step_size(step_size, float(eps), None)
        self.eps, self.norm, self.replays = float(eps), norm, int(replays)
        self.step_size = None if step_size is None else float(step_size)

    @property
    def threat(self) -> ThreatModel:
        return make_threat(self.norm, self.eps)

    @property
    def effective_step_size(self) -> float:
        return self.step_size if self.step_size is not None else self.eps

    def prepare(self, module: ModuleT, x: Tensor, y: Tensor) -> Any:
        """Computed once per batch and shared by the replays (the teacher's clean logits)."""
        return None

    def replay_loss(self, module: ModuleT, x_in: Tensor, x: Tensor, y: Tensor, ctx: Any) -> tuple[Tensor, Tensor]:
        """``(loss, logits)`` at the perturbed input ``x_in`` (``x`` is the clean batch)."""
        raise NotImplementedError

    def ascent_loss(self, module: ModuleT, x_in: Tensor, y: Tensor, ctx: Any) -> Tensor:
        """The scalar loss delta ascends when :attr:`separate_ascent`."""
        raise NotImplementedError
