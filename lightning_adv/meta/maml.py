"""MAML (Finn et al.) as a few-shot learner: gradient steps on the support set.

learn2learn's ``MAML.clone()``/``adapt()`` on the whole network or on the last linear layer
only (table 5.7), first or second order. ``adv_support`` (an attack) makes every inner step
adapt on the support attacked against the *current* fast weights: ADML (the authors'
``meta_ADML.py``) and adversarial fine-tuning (table 5.3).

**BatchNorm at evaluation.** The authors' functional ``Learner`` calls
``F.batch_norm(..., training=True)`` always, in fine-tuning and testing too: the statistics
are the task's own batch (transductive). ``eval_bn='batch'`` (default) does the same on
the adapted clones without touching the running statistics (the BN layers run with
``track_running_stats`` off for the call); ``eval_bn='running'`` uses the running
statistics, as this project did before.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..attacks import attack_grad_context
from ..extras import require_fewshot
from .learners import Learner, _normal
from ..validation import check_int, check_real

__all__ = ["MAML", "batch_statistics", "EVAL_BN"]

EVAL_BN = ("batch", "running")


@contextlib.contextmanager
def batch_statistics(*modules: Optional[nn.Module]) -> Iterator[None]:
    """BatchNorm layers of ``modules`` normalise by the batch's statistics for the block, and
    leave their running statistics untouched; every layer's settings are restored after."""
    bns = [m for mod in modules if mod is not None for m in mod.modules() if isinstance(m, _BatchNorm)]
    saved = [(m, m.training, m.track_running_stats) for m in bns]
    for m in bns:
        m.training, m.track_running_stats = True, False
    try:
        yield
    finally:
        for m, training, track in saved:
            m.training, m.track_running_stats = training, track


class _Net(nn.Module):
    """Backbone features followed by MAML's linear layer (shares their weights)."""

    def __init__(self, backbone: nn.Module, linear: nn.Linear) -> None:
        super().__init__()
        self.backbone, self.linear = backbone, linear

    def forward(self, x: Tensor) -> Tensor:
        # checker: few-shot backbones have embed(); nn.Module.__getattr__ is typed Tensor | Module
        return self.linear(self.backbone.embed(x))  # type: ignore[operator]


class _Adapted(nn.Module):
    """One adapted clone per task (of the whole net, or of the last layer on shared features)."""

    def __init__(self, clones: list[nn.Module], backbone: Optional[nn.Module], transductive: bool) -> None:
        super().__init__()
        self.clones = nn.ModuleList(clones)
        self.backbone = backbone  # set when only the last layer is adapted
        self.transductive = transductive

    def _bn(self) -> Any:
        return batch_statistics(self.clones, self.backbone) if self.transductive else contextlib.nullcontext()

    def forward(self, query_x: Tensor) -> Tensor:
        with self._bn():
            if self.backbone is None:
                return torch.stack([c(q) for c, q in zip(self.clones, query_x)])
            t, q = query_x.shape[:2]
            # checker: few-shot backbones have embed(); nn.Module.__getattr__ is typed Tensor | Module
            feats = self.backbone.embed(query_x.flatten(0, 1)).view(t, q, -1)  # type: ignore[operator]
            return torch.stack([c(f) for c, f in zip(self.clones, feats)])


class MAML(Learner):
    """MAML learner.

    Args:
        ways: classes per task (sizes the linear layer; checked against the data).
        layers: ``all`` (MAML) or ``last`` (the final linear layer only, table 5.7).
        lr, steps, test_steps: inner SGD (authors: 0.01 mini / 0.4 Omniglot, 5, 10).
        first_order: first-order MAML (the authors' code is effectively first order).
        eval_bn: ``batch`` (authors: task batch statistics at evaluation) or ``running``.
    """

    gradient_based = True

    def __init__(self, ways: int = 5, layers: str = "all", lr: float = 0.01, steps: int = 5, test_steps: int = 10,
                 first_order: bool = True, eval_bn: str = "batch") -> None:
        super().__init__()
        require_fewshot("MAML")
        for name, value, minimum in (("ways", ways, 2), ("steps", steps, 1), ("test_steps", test_steps, 1)):
            check_int(f"MAML {name}", value, minimum)
        if layers not in ("all", "last"):
            raise ValueError(f"MAML layers={layers!r} must be 'all' (MAML) or 'last' (last layer only)")
        check_real("MAML lr", lr, positive=True)
        if eval_bn not in EVAL_BN:
            raise ValueError(f"MAML eval_bn={eval_bn!r} is not one of {EVAL_BN} ('batch': the authors' transductive "
                             f"statistics, 'running': the running statistics)")
        self.ways, self.layers, self.lr = ways, layers, float(lr)
        self.steps, self.test_steps, self.first_order, self.eval_bn = steps, test_steps, bool(first_order), eval_bn
        self.linear: Optional[nn.Linear] = None

    def bind(self, backbone: nn.Module, image_size: int) -> None:
        # checker: few-shot backbones have feature_dim(); nn.Module.__getattr__ is typed Tensor | Module
        self.linear = nn.Linear(backbone.feature_dim(image_size), self.ways)  # type: ignore[operator]

    def describe(self) -> str:
        return "maml" if self.layers == "all" else "maml_last"

    def check_data(self, datamodule: Any) -> None:
        dm_ways = [w for w in (getattr(datamodule, "ways", None), getattr(datamodule, "test_ways", None)) if w]
        if any(w != self.ways for w in dm_ways):
            raise ValueError(f"learner ways={self.ways} sizes MAML's linear layer, but the data draws {dm_ways}-way "
                             f"tasks; make them equal")

    def adapt(self, backbone: nn.Module, support_x: Tensor, support_y: Tensor, evaluating: bool,
              adv_support: Any = None) -> nn.Module:
        assert self.linear is not None, "MAML.bind(backbone, image_size) was not called"
        transductive = evaluating and self.eval_bn == "batch"
        last_only = self.layers == "last"
        with torch.inference_mode(False), attack_grad_context():
            support_x, support_y = _normal(support_x), _normal(support_y)
            clones = [self._adapt_one(backbone, sx, sy, evaluating, adv_support, transductive)
                      for sx, sy in zip(support_x, support_y)]
        return _Adapted(clones, backbone if last_only else None, transductive)

    def _adapt_one(self, backbone: nn.Module, sx: Tensor, sy: Tensor, evaluating: bool, adv_support: Any,
                   transductive: bool) -> nn.Module:
        assert self.linear is not None
        first_order = self.first_order or evaluating
        last_only = self.layers == "last"
        net: nn.Module = self.linear if last_only else _Net(backbone, self.linear)
        l2l = require_fewshot("MAML")
        clone = l2l.algorithms.MAML(net, lr=self.lr, first_order=first_order, allow_unused=not last_only).clone()
        bn = (lambda: batch_statistics(clone, backbone)) if transductive else contextlib.nullcontext
        with bn():
            # checker: as above
            inputs = backbone.embed(sx) if last_only else sx  # type: ignore[operator]
        for _ in range(self.test_steps if evaluating else self.steps):
            if adv_support is not None:  # the support attacked against the current fast weights
                def fn(x: Tensor, c: nn.Module = clone) -> Tensor:
                    with bn():
                        # checker: as above
                        return c(backbone.embed(x)) if last_only else c(x)  # type: ignore[operator]

                adv = adv_support(fn, sx, sy, mode_module=backbone if last_only else clone)
                with bn():
                    # checker: few-shot backbones have embed(); nn.Module.__getattr__ is typed Tensor | Module
                    inputs = backbone.embed(adv) if last_only else adv  # type: ignore[operator]
            with bn():
                loss = F.cross_entropy(clone(inputs), sy)
            clone.adapt(loss)
        return clone
