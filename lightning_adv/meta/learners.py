"""Few-shot learners: how a backbone becomes a classifier of one task's queries.

Two families, as in learn2learn's algorithms:

* :class:`HeadLearner` fits a closed-form head on the embedded support set (R2-D2's ridge
  regression, ProtoNet's prototypes, MetaOptNet's SVM; :mod:`.heads`);
* :class:`~lightning_adv.meta.maml.MAML` adapts network weights by gradient steps on the
  support (learn2learn's ``clone``/``adapt``), and can attack the support at every step
  (ADML, adversarial fine-tuning).

``learner.adapt(backbone, support_x, support_y, evaluating)`` works on a stack of tasks
(``(T, S, C, H, W)``, ``(T, S)``) and returns a module ``(T, Q, C, H, W) -> (T, Q, ways)``.
A learner is an ``nn.Module`` (its parameters, e.g. a learnt ridge lambda or MAML's linear
layer, are the meta-learner's) with a typed constructor; :meth:`Learner.config` is what
checkpoints store.
"""
from __future__ import annotations

import contextlib
import importlib
import inspect
from typing import Any, Optional

import torch
from torch import Tensor, nn

from .heads import HEADS

__all__ = ["Learner", "HeadLearner", "SingleTask", "coerce_learner"]


def _normal(t: Tensor) -> Tensor:
    """A tensor usable by autograd (inference tensors from ``trainer.test`` are cloned)."""
    return t.clone() if t.is_inference() else t


class Learner(nn.Module):
    """Base of the few-shot learners (see the module doc)."""

    #: adapts by gradient steps, so the support can be attacked at every step (ADML)
    gradient_based: bool = False

    def bind(self, backbone: nn.Module, image_size: int) -> None:
        """Build what depends on the backbone (called once by the module's constructor)."""

    def check_data(self, datamodule: Any) -> None:
        """Refuse data this learner cannot classify (called in the module's ``setup``)."""

    def adapt(self, backbone: nn.Module, support_x: Tensor, support_y: Tensor, evaluating: bool,
              adv_support: Any = None) -> nn.Module:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        params = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        cls = type(self)
        return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": {p: getattr(self, p) for p in params}}

    def describe(self) -> str:
        return type(self).__name__


def coerce_learner(value: Any, param: str = "learner") -> Learner:
    """A learner from an instance or a ``class_path``/``init_args`` mapping (a checkpoint's)."""
    if isinstance(value, dict):
        module_name, _, cls_name = str(value.get("class_path", "")).rpartition(".")
        try:
            klass = getattr(importlib.import_module(module_name), cls_name, None) if module_name else None
        except ImportError:
            klass = None
        if not (isinstance(klass, type) and issubclass(klass, Learner)):
            raise ValueError(f"{param}.class_path={value.get('class_path')!r} is not a learner of lightning_adv.meta "
                             f"(HeadLearner or MAML)")
        value = klass(**dict(value.get("init_args") or {}))
    if not isinstance(value, Learner):
        raise ValueError(f"{param} must be a lightning_adv.meta learner (HeadLearner or MAML), got {type(value).__name__}")
    return value


class _FittedHead(nn.Module):
    """Backbone + a head fit on the clean support: ``(T, Q, C, H, W) -> (T, Q, ways)``."""

    def __init__(self, backbone: nn.Module, query_fn: Any) -> None:
        super().__init__()
        self.backbone = backbone
        self.query_fn = query_fn

    def forward(self, query_x: Tensor) -> Tensor:
        t, q = query_x.shape[:2]
        # checker: few-shot backbones have embed(); nn.Module.__getattr__ is typed Tensor | Module
        return self.query_fn(self.backbone.embed(query_x.flatten(0, 1)).view(t, q, -1))  # type: ignore[operator]


class HeadLearner(Learner):
    """A closed-form head fit on the embedded support (R2-D2, ProtoNet, MetaOptNet).

    Args:
        head: ``r2d2``, ``protonet`` or ``metaoptnet`` (:data:`~lightning_adv.meta.HEADS`).
        head_kwargs: its arguments (``lam``, ``learn_lambda``, ``c_reg``, ``scale``, ...).

    At evaluation the head is fit without a graph (only the queries are differentiated).
    """

    def __init__(self, head: str = "r2d2", head_kwargs: Optional[dict[str, Any]] = None) -> None:
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"head={head!r} is not one of {tuple(HEADS)}")
        self.head_name, self.head_kwargs = head, dict(head_kwargs or {})
        try:
            self.head = HEADS[head](**self.head_kwargs)
        except TypeError as err:
            raise ValueError(f"head_kwargs={head_kwargs} do not fit head={head!r}: {err}") from None

    def config(self) -> dict[str, Any]:
        cfg = super().config()
        cfg["init_args"] = {"head": self.head_name, "head_kwargs": self.head_kwargs}
        return cfg

    def describe(self) -> str:
        return self.head_name

    def adapt(self, backbone: nn.Module, support_x: Tensor, support_y: Tensor, evaluating: bool,
              adv_support: Any = None) -> nn.Module:
        if adv_support is not None:
            raise ValueError(f"head={self.head_name!r} is fit in closed form: there are no adaptation steps to attack "
                             f"(adversarial support needs the MAML learner)")
        ways = int(support_y.max().item()) + 1
        with torch.inference_mode(False):  # Lightning may test under inference mode
            support_x, support_y = _normal(support_x), _normal(support_y)
            t, s = support_x.shape[:2]
            with torch.no_grad() if evaluating else contextlib.nullcontext():
                # checker: few-shot backbones have embed(); nn.Module.__getattr__ is typed Tensor | Module
                emb = backbone.embed(support_x.flatten(0, 1)).view(t, s, -1)  # type: ignore[operator]
                query_fn = self.head.fit(emb, support_y, ways, fast=evaluating)
        return _FittedHead(backbone, query_fn)


class SingleTask(nn.Module):
    """A batched learner seen as a one-task model: ``(Q, C, H, W) -> (Q, ways)``."""

    def __init__(self, learner: nn.Module) -> None:
        super().__init__()
        self.learner = learner

    def forward(self, query_x: Tensor) -> Tensor:
        return self.learner(query_x.unsqueeze(0)).squeeze(0)
