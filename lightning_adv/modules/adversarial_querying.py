"""Adversarial querying (thesis chapter 5, Algorithm 5): robust few-shot meta-learning.

One LightningModule for every head and training mode of chapter 5:

* heads: ``r2d2`` (ridge regression, :class:`~lightning_adv.meta.R2D2Head`), ``protonet``
  and ``metaoptnet`` (learn2learn's ``PrototypicalClassifier`` / ``SVClassifier``), and
  ``maml`` (learn2learn's ``MAML`` ``clone``/``adapt``; all layers, or the last linear
  layer only as in table 5.7; first or second order);
* training modes: ``natural`` meta-learning; ``aq`` adversarial querying (the query set is
  attacked through the learner adapted on the clean support; PGD 8/255, step 2/255, 7
  steps); ``trades`` meta-TRADES (table 5.6); ``adml`` ADML-style (support attacked too,
  table 5.1 baseline: ``(CE(adv query | clean-adapted) + CE(clean query | adv-adapted))/2``).

A batch is a stack of tasks ``(support_x, support_y, query_x, query_y)`` with shapes
``(T, S, C, H, W)``, ``(T, S)``, ``(T, Q, C, H, W)``, ``(T, Q)`` (see
``datamodules/fewshot.py``). The attack is the foundation's :func:`~lightning_adv.attacks.pgd`
engine with a loss that runs the adapted learner, so only the query images move; the
same :meth:`adapted_learner` is the interface the attack suite uses.

Evaluation: the module computes the natural accuracy per episode, mean and 95% CI over all
episodes (all DDP ranks), logged as ``{val,test}/acc`` (+ ``_ci95``). Robust accuracy goes
through the project's one evaluator: the suite callbacks (``callbacks.PGDEvaluation``,
``callbacks.AttackSuiteEvaluation``) attack every task's queries through
:meth:`adapted_learner` and log ``{val,test}/robust_acc`` (per-query worst case) and
``{val,test}/robust_acc/<attack>``, with ``_ci95`` over episodes. ``eval_attack`` and
``test_attacks`` (table 5.11) configure the ``PGDEvaluation`` the module attaches when the
trainer has none (:meth:`configure_callbacks`); for MAML, ``adv_finetune`` makes the
callbacks also evaluate the learner fine-tuned on attacked support (table 5.3:
``test/acc_advtuned``, ``test/robust_acc_advtuned``). A table is printed at the end of ``test``.

Differences from the authors' code (see the shared notes): the TRADES KL is over the
classes (theirs normalised over the queries); MetaOptNet's QP runs 15 iterations for the
training loss *and* the training attack (one fit per support set; theirs re-solved with 3
iterations in every attack step), and 3 at evaluation as theirs.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, Optional

import learn2learn as l2l
import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..attacks import PGD, attack_grad_context, get_attack_loss, kl_loss, module_mode
from ..meta import HEADS, EpisodeAccuracy
from ..models import create_model, load_model_weights, model_class
from .optim import OptimConfig, build_optimizer, build_scheduler

__all__ = ["AdversarialQuerying", "TRAINING_MODES", "FEWSHOT_HEADS"]

TRAINING_MODES = ("natural", "aq", "trades", "adml")
FEWSHOT_HEADS = ("r2d2", "protonet", "metaoptnet", "maml")
Batch = tuple[Tensor, Tensor, Tensor, Tensor]


class _HeadLearner(nn.Module):
    """Backbone + a head fit on the clean support: ``(T, Q, C, H, W) -> (T, Q, ways)``."""

    def __init__(self, backbone: nn.Module, query_fn: Any) -> None:
        super().__init__()
        self.backbone = backbone
        self.query_fn = query_fn

    def forward(self, query_x: Tensor) -> Tensor:
        t, q = query_x.shape[:2]
        return self.query_fn(self.backbone.embed(query_x.flatten(0, 1)).view(t, q, -1))


class _MAMLLearner(nn.Module):
    """One adapted MAML clone per task (of the whole net, or of the last layer only)."""

    def __init__(self, clones: list[nn.Module], backbone: Optional[nn.Module]) -> None:
        super().__init__()
        self.clones = nn.ModuleList(clones)
        self.backbone = backbone  # set when only the last layer is adapted

    def forward(self, query_x: Tensor) -> Tensor:
        if self.backbone is None:
            return torch.stack([c(q) for c, q in zip(self.clones, query_x)])
        t, q = query_x.shape[:2]
        feats = self.backbone.embed(query_x.flatten(0, 1)).view(t, q, -1)
        return torch.stack([c(f) for c, f in zip(self.clones, feats)])


class _MAMLNet(nn.Module):
    """Backbone features followed by MAML's linear layer (not registered: shares weights)."""

    def __init__(self, backbone: nn.Module, linear: nn.Linear) -> None:
        super().__init__()
        self.backbone, self.linear = backbone, linear

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.backbone.embed(x))


class _SingleTask(nn.Module):
    """A batched learner seen as a one-task model: ``(Q, C, H, W) -> (Q, ways)``."""

    def __init__(self, learner: nn.Module) -> None:
        super().__init__()
        self.learner = learner

    def forward(self, query_x: Tensor) -> Tensor:
        return self.learner(query_x.unsqueeze(0)).squeeze(0)


def _normal(t: Tensor) -> Tensor:
    """A tensor usable by autograd (inference tensors from ``trainer.test`` are cloned)."""
    return t.clone() if t.is_inference() else t


def _coerce_attack(value: Any, name: str) -> PGD:
    return PGD.coerce(value, name)


class AdversarialQuerying(pl.LightningModule):
    """Few-shot meta-learning, natural or adversarially queried (Goldblum et al.).

    Args:
        arch: registered backbone (``r2d2_embedding``, ``resnet12``, ``conv4``).
        in_channels, image_size: the images (checked against the datamodule).
        mean, std: normalisation inside the backbone (None: identity, as the authors).
        arch_kwargs: extra backbone arguments (``width``, ``denoise_after``, ...).
        head: ``r2d2``, ``protonet``, ``metaoptnet`` or ``maml``.
        head_kwargs: head arguments (``lam``, ``learn_lambda``, ``c_reg``, ``scale``, ...).
        training_mode: ``natural``, ``aq``, ``trades`` or ``adml``.
        attack: the training attack on the queries (and support for ADML). Authors: PGD
            8/255, 7 steps of 2/255, backbone in train mode.
        eval_attack: the validation/test attack (authors: PGD-20, eval mode) of the attached
            ``PGDEvaluation`` (:meth:`configure_callbacks`).
        test_attacks: more attacks at test time, logged as ``test/robust_acc/<label>``.
        trades_beta: weight of the meta-TRADES KL term (the thesis' ``1/lambda``).
        ways: ways of the tasks (sizes MAML's linear layer; checked against the data).
        maml_layers: ``all`` (MAML) or ``last`` (only the final linear layer, table 5.7).
        maml_lr, maml_steps, maml_test_steps: inner SGD (authors: 0.01, 5, 10).
        maml_first_order: first-order MAML (the authors' code is effectively first order).
        adv_finetune: MAML only: also evaluate after fine-tuning on PGD-attacked support
            (7-PGD in table 5.3), logged by the suite callbacks as
            ``test/acc_advtuned``/``test/robust_acc_advtuned``.
        optim: optimiser (authors: SGD Nesterov, lr 0.1, momentum 0.9, wd 5e-4, milestones
            [19, 39, 49] in 0-based epochs; the configs spell it out).
        lr_factors: multipliers of the initial LR from each of ``optim.milestones`` on (the
            authors' LambdaLR: [0.06, 0.012, 0.0024]); None uses ``optim.gamma``.
        init_weights: backbone weights to start from (e.g. an ``AdvTraining`` checkpoint of
            the same backbone: the transfer-learning baseline); the classifier is dropped.
    """

    def __init__(
        self,
        arch: str = "r2d2_embedding",
        in_channels: int = 3,
        image_size: int = 84,
        mean: Optional[list[float]] = None,
        std: Optional[list[float]] = None,
        arch_kwargs: Optional[dict[str, Any]] = None,
        head: str = "r2d2",
        head_kwargs: Optional[dict[str, Any]] = None,
        training_mode: str = "aq",
        attack: PGD = PGD(eps=8 / 255, steps=7, step_size=2 / 255, bn_mode="train"),
        eval_attack: PGD = PGD(eps=8 / 255, steps=20, step_size=2 / 255, bn_mode="eval"),
        test_attacks: Optional[list[PGD]] = None,
        trades_beta: float = 1.0,
        ways: int = 5,
        maml_layers: str = "all",
        maml_lr: float = 0.01,
        maml_steps: int = 5,
        maml_test_steps: int = 10,
        maml_first_order: bool = True,
        adv_finetune: Optional[PGD] = None,
        optim: OptimConfig = OptimConfig(),
        lr_factors: Optional[list[float]] = None,
        init_weights: Optional[str] = None,
    ) -> None:
        super().__init__()
        if head not in FEWSHOT_HEADS:
            raise ValueError(f"head={head!r} is not one of {FEWSHOT_HEADS}")
        if training_mode not in TRAINING_MODES:
            raise ValueError(f"training_mode={training_mode!r} is not one of {TRAINING_MODES}")
        if maml_layers not in ("all", "last"):
            raise ValueError(f"maml_layers={maml_layers!r} must be 'all' (MAML) or 'last' (last layer only)")
        for name, value, minimum in (("ways", ways, 2), ("maml_steps", maml_steps, 1),
                                     ("maml_test_steps", maml_test_steps, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{name} must be an integer >= {minimum}, got {name}={value!r}")
        if not maml_lr > 0:
            raise ValueError(f"maml_lr must be > 0, got maml_lr={maml_lr}")
        if trades_beta < 0:
            raise ValueError(f"trades_beta must be >= 0, got trades_beta={trades_beta}")
        if adv_finetune is not None and head != "maml":
            raise ValueError("adv_finetune (adversarial fine-tuning on the support) needs head='maml'; "
                             "closed-form heads have no fine-tuning steps to attack. Set adv_finetune: null")
        attack = _coerce_attack(attack, "attack")
        eval_attack = _coerce_attack(eval_attack, "eval_attack")
        extra = [_coerce_attack(a, "test_attacks[]") for a in (test_attacks or [])]
        adv_finetune = None if adv_finetune is None else _coerce_attack(adv_finetune, "adv_finetune")
        optim = OptimConfig.coerce(optim)
        if lr_factors is not None:
            if len(lr_factors) != len(optim.milestones or []) or any(f <= 0 for f in lr_factors):
                raise ValueError(
                    f"lr_factors={lr_factors} must hold one positive LR multiplier per milestone "
                    f"(optim.milestones={optim.milestones}); set lr_factors: null to use optim.gamma")
        self.optim_cfg = optim
        self.save_hyperparameters(ignore=["optim", "attack", "eval_attack", "test_attacks", "adv_finetune"])
        self.hparams["optim"] = optim.to_dict()
        self.hparams["attack"] = attack.config()
        self.hparams["eval_attack"] = eval_attack.config()
        self.hparams["test_attacks"] = [a.config() for a in extra]
        self.hparams["adv_finetune"] = None if adv_finetune is None else adv_finetune.config()
        self.attack, self.eval_attack, self.test_attacks = attack, eval_attack, extra
        self.adv_finetune = adv_finetune
        self.head_name, self.training_mode = head, training_mode
        self.trades_beta = float(trades_beta)
        self.ways = ways
        self.maml_layers, self.maml_lr = maml_layers, float(maml_lr)
        self.maml_steps, self.maml_test_steps = maml_steps, maml_test_steps
        self.maml_first_order = bool(maml_first_order)
        self.lr_factors = None if lr_factors is None else [float(f) for f in lr_factors]

        if not hasattr(model_class(arch), "embed"):
            raise ValueError(f"arch={arch!r} is not a few-shot backbone (no embed()); use r2d2_embedding, "
                             f"resnet12 or conv4")
        self.backbone = create_model(arch, in_channels=in_channels, input_size=image_size, mean=mean, std=std,
                                     **(arch_kwargs or {}))
        if init_weights:
            load_model_weights(self.backbone, init_weights, strict=False)
        self.head: Optional[nn.Module] = None
        self.maml_linear: Optional[nn.Linear] = None
        if head == "maml":
            if head_kwargs:
                raise ValueError(f"head_kwargs={head_kwargs} are not used by head='maml'; use the maml_* arguments")
            self.maml_linear = nn.Linear(self.backbone.feature_dim(image_size), ways)
        else:
            try:
                self.head = HEADS[head](**(head_kwargs or {}))
            except TypeError as err:
                raise ValueError(f"head_kwargs={head_kwargs} do not fit head={head!r}: {err}") from None

        labels = [a.label for a in [eval_attack, *extra]]
        if len(set(labels)) != len(labels):
            raise ValueError(f"eval_attack and test_attacks have duplicate names {labels}; set `name` on each attack")
        # clean accuracy only: robust accuracy is the suite callbacks' (configure_callbacks)
        self.metrics = nn.ModuleDict({f"{stage}_acc": EpisodeAccuracy() for stage in ("val", "test")})
        self.test_results: dict[str, dict[str, float]] = {}

    # ------------------------------------------------------------------ checks
    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is None:
            return
        shape = getattr(dm, "input_shape", None)
        hp = self.hparams
        if shape is not None and (shape[0] != hp.in_channels or shape[1] != hp.image_size):
            raise ValueError(
                f"model.in_channels={hp.in_channels}, model.image_size={hp.image_size} but the data "
                f"({type(dm).__name__}) has images of shape {tuple(shape)}; set --model.in_channels {shape[0]} "
                f"--model.image_size {shape[1]}")
        dm_ways = [getattr(dm, "ways", None), getattr(dm, "test_ways", None)]
        if self.head_name == "maml" and any(w is not None and w != self.ways for w in dm_ways):
            raise ValueError(f"model.ways={self.ways} sizes MAML's linear layer, but the data draws "
                             f"{[w for w in dm_ways if w is not None]}-way tasks; make them equal")

    # ------------------------------------------------------------------ the public interface
    def episodes(self, batch: Batch) -> Iterator[tuple[Tensor, Tensor, Tensor, Tensor]]:
        """The tasks of a batch, one ``(support_x, support_y, query_x, query_y)`` at a time."""
        sx, sy, qx, qy = batch
        for t in range(sx.shape[0]):
            yield sx[t], sy[t], qx[t], qy[t]

    def adapted_learner(self, support_x: Tensor, support_y: Tensor, adv_finetune: bool = False) -> nn.Module:
        """The learner adapted on one clean support set, backbone in eval mode.

        ``adv_finetune=True`` (MAML with an ``adv_finetune`` attack): each inner step fine-tunes
        on the support attacked by that attack instead (table 5.3).

        ``support_x`` ``(S, C, H, W)`` in [0, 1], ``support_y`` ``(S,)`` in ``0..ways-1``.
        Returns a module whose ``forward(query_x)`` gives ``(Q, ways)`` logits,
        differentiable w.r.t. ``query_x``. Its query forward uses the module's current mode
        (eval under Lightning's validate/test). MAML adapts under ``enable_grad`` even
        inside ``trainer.test``.
        """
        if adv_finetune and self.adv_finetune is None:
            raise ValueError("adapted_learner(adv_finetune=True) needs the module's adv_finetune attack (head='maml')")
        with module_mode(self, "eval"):
            learner = self._adapt(support_x.unsqueeze(0), support_y.unsqueeze(0),
                                  adv_support=self.adv_finetune if adv_finetune else None)
        if isinstance(learner, _MAMLLearner):
            # a fixed function of the queries: cut the adapted weights from the meta-parameters' graph, so
            # an outside attack (AutoAttack's FAB calls backward()) can never reach the module's .grad
            for clone in learner.clones:
                l2l.utils.detach_module(clone, keep_requires_grad=False)
        return _SingleTask(learner)

    # ------------------------------------------------------------------ adaptation
    def _adapt(self, support_x: Tensor, support_y: Tensor, adv_support: Optional[PGD] = None) -> nn.Module:
        """Batched adaptation: returns a learner ``(T, Q, C, H, W) -> (T, Q, ways)``."""
        ways = int(support_y.max().item()) + 1
        evaluating = not self.backbone.training
        with torch.inference_mode(False):  # Lightning may test under inference mode
            support_x, support_y = _normal(support_x), _normal(support_y)
            if self.head_name == "maml":
                return self._maml_adapt(support_x, support_y, evaluating, adv_support)
            t, s = support_x.shape[:2]
            # at evaluation only the queries are differentiated: fit the head without a graph
            with torch.no_grad() if evaluating else contextlib.nullcontext():
                emb = self.backbone.embed(support_x.flatten(0, 1)).view(t, s, -1)
                assert self.head is not None
                query_fn = self.head.fit(emb, support_y, ways, fast=evaluating)
        return _HeadLearner(self.backbone, query_fn)

    def _maml_adapt(self, support_x: Tensor, support_y: Tensor, evaluating: bool,
                    adv_support: Optional[PGD]) -> nn.Module:
        assert self.maml_linear is not None
        steps = self.maml_test_steps if evaluating else self.maml_steps
        first_order = self.maml_first_order or evaluating
        last_only = self.maml_layers == "last"
        clones = []
        with attack_grad_context():
            for sx, sy in zip(support_x, support_y):
                if last_only:
                    clone = l2l.algorithms.MAML(self.maml_linear, lr=self.maml_lr, first_order=first_order).clone()
                    inputs, fn = self.backbone.embed(sx), None
                else:
                    net = _MAMLNet(self.backbone, self.maml_linear)
                    clone = l2l.algorithms.MAML(net, lr=self.maml_lr, first_order=first_order,
                                                allow_unused=True).clone()
                    inputs = sx
                for _ in range(steps):
                    if adv_support is not None:
                        current = clone
                        fn = (lambda x, c=current: c(self.backbone.embed(x))) if last_only else current
                        adv = adv_support(fn, sx, sy, mode_module=self.backbone if last_only else current)
                        inputs = self.backbone.embed(adv) if last_only else adv
                    clone.adapt(F.cross_entropy(clone(inputs), sy))
                clones.append(clone)
        return _MAMLLearner(clones, self.backbone if last_only else None)

    # ------------------------------------------------------------------ attacks
    def _attack(self, learner: nn.Module, x: Tensor, target: Tensor, attack: PGD,
                loss: Optional[str] = None) -> Tensor:
        """PGD on a stack of task sets ``x`` ``(T, N, C, H, W)`` through ``learner``.

        ``target`` is ``(T, N)`` labels, or ``(T, N, ways)`` probabilities for the KL loss.
        Only ``x`` moves; the learner (fit on the clean support) is fixed.
        """
        t, n = x.shape[:2]

        def flat_model(z: Tensor) -> Tensor:
            return learner(z.view(t, n, *z.shape[1:])).flatten(0, 1)

        loss_fn = get_attack_loss(loss or attack.loss)
        adv = attack(flat_model, x.flatten(0, 1), target.flatten(0, 1), loss_fn=loss_fn, mode_module=learner)
        return adv.view_as(x)

    def attack_queries(self, learner: nn.Module, query_x: Tensor, query_y: Tensor,
                       attack: Optional[PGD] = None) -> Tensor:
        """Adversarial queries ``(T, Q, C, H, W)`` against a batched adapted learner."""
        return self._attack(learner, query_x, query_y, attack or self.eval_attack, loss="ce")

    # ------------------------------------------------------------------ training
    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        sx, sy, qx, qy = batch
        learner = self._adapt(sx, sy)
        mode = self.training_mode
        if mode == "natural":
            logits = learner(qx)
            loss = F.cross_entropy(logits.flatten(0, 1), qy.flatten())
            self.log("train/acc", self._acc(logits, qy).mean(), on_step=False, on_epoch=True, prog_bar=True)
        elif mode == "aq":
            qx_adv = self._attack(learner, qx, qy, self.attack, loss="ce")
            logits = learner(qx_adv)
            loss = F.cross_entropy(logits.flatten(0, 1), qy.flatten())
            self.log("train/adv_acc", self._acc(logits, qy).mean(), on_step=False, on_epoch=True, prog_bar=True)
        elif mode == "trades":
            clean = learner(qx)
            if self.attack.loss == "kl":
                qx_adv = self._attack(learner, qx, F.softmax(clean.detach(), dim=-1), self.attack)
            else:
                qx_adv = self._attack(learner, qx, qy, self.attack, loss="ce")
            adv = learner(qx_adv)
            robust = kl_loss(adv.flatten(0, 1), F.softmax(clean.flatten(0, 1), dim=-1)).mean()
            loss = F.cross_entropy(clean.flatten(0, 1), qy.flatten()) + self.trades_beta * robust
            self.log("train/trades_kl", robust.detach(), on_step=False, on_epoch=True)
            self.log("train/acc", self._acc(clean, qy).mean(), on_step=False, on_epoch=True)
            self.log("train/adv_acc", self._acc(adv, qy).mean(), on_step=False, on_epoch=True, prog_bar=True)
        else:  # adml: support attacked too
            sx_adv = self._attack(learner, sx, sy, self.attack, loss="ce")
            adv_learner = self._adapt(sx_adv, sy)
            qx_adv = self._attack(learner, qx, qy, self.attack, loss="ce")
            adv = learner(qx_adv)
            loss = 0.5 * (F.cross_entropy(adv.flatten(0, 1), qy.flatten())
                          + F.cross_entropy(adv_learner(qx).flatten(0, 1), qy.flatten()))
            self.log("train/adv_acc", self._acc(adv, qy).mean(), on_step=False, on_epoch=True, prog_bar=True)
        self.log("train/loss", loss.detach(), on_step=True, on_epoch=True)
        return loss

    @staticmethod
    def _acc(logits: Tensor, y: Tensor) -> Tensor:
        """Per-episode accuracy ``(T,)`` of ``(T, Q, ways)`` logits."""
        return (logits.detach().argmax(-1) == y).float().mean(-1)

    # ------------------------------------------------------------------ evaluation
    def configure_callbacks(self) -> list[Any]:
        """The robust evaluation: a ``PGDEvaluation`` with ``eval_attack`` (val and test) and
        ``test_attacks`` (test), unless the trainer already has a ``PGDEvaluation`` of its own
        (then that one's attacks are the evaluation; an ``AttackSuiteEvaluation`` takes the test
        attacks over, see its docs)."""
        from callbacks import PGDEvaluation  # the callbacks package builds on this library, not the reverse

        trainer = self._trainer
        existing = [] if trainer is None else [c for c in trainer.callbacks if isinstance(c, PGDEvaluation)]
        # a config's own PGDEvaluation, or the one this module attached for an earlier fit/test: keep it
        if any(getattr(c, "from_module", None) in (None, self) for c in existing):
            return []
        cb = PGDEvaluation(attacks=[self.eval_attack], test_attacks=list(self.test_attacks))
        cb.from_module = self  # type: ignore[attr-defined]
        return [cb]

    def _eval_step(self, batch: Batch, stage: str) -> None:
        sx, sy, qx, qy = batch
        learner = self._adapt(sx, sy)
        with torch.no_grad():
            self.metrics[f"{stage}_acc"].update(self._acc(learner(qx), qy))

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def _log_stage(self, stage: str) -> dict[str, float]:
        metric = self.metrics[f"{stage}_acc"]
        mean, ci, n = metric.compute()
        metric.reset()
        self.log(f"{stage}/acc", mean, prog_bar=True)
        self.log(f"{stage}/acc_ci95", ci)
        return {"mean": float(mean), "ci95": float(ci), "episodes": int(n)}

    def on_validation_epoch_end(self) -> None:
        self._log_stage("val")

    def on_test_epoch_end(self) -> None:
        """Clean accuracy, then the robust results of the suite callbacks (their epoch-end hooks run first)."""
        self.test_results = {"acc": self._log_stage("test")}
        if self._trainer is None:
            return
        for cb in self.trainer.callbacks:
            self.test_results.update(getattr(cb, "episode_results", {}).get("test", {}))
        if self.trainer.is_global_zero:
            print(self.results_table(self.test_results), flush=True)

    def results_table(self, results: dict[str, dict[str, float]]) -> str:
        """The test results as a Markdown table (accuracy in %, 95% CI); ``robust_acc`` is the
        per-query worst case over every attack the suite callbacks ran."""
        hp = self.hparams
        attacks = sorted({k.split("/", 1)[1] for k in results if "/" in k})
        lines = [f"Few-shot test: head={self.head_name}, training={self.training_mode}, arch={hp.arch}; robust = "
                 f"worst case over {', '.join(attacks) or 'no attack'}",
                 "", "| metric | accuracy (%) | 95% CI (%) | episodes |", "|---|---|---|---|"]
        for name, r in results.items():
            lines.append(f"| {name} | {100 * r['mean']:.2f} | ± {100 * r['ci95']:.2f} | {r['episodes']} |")
        return "\n".join(lines)

    # ------------------------------------------------------------------ optim
    def configure_optimizers(self) -> Any:
        optimizer = build_optimizer(self.parameters(), self.optim_cfg)
        if self.lr_factors is not None and self.optim_cfg.scheduler == "multistep":
            milestones, factors = list(self.optim_cfg.milestones or []), [1.0] + self.lr_factors

            def factor(epoch: int) -> float:
                return factors[sum(epoch >= m for m in milestones)]

            scheduler: Any = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        else:
            max_epochs = self.trainer.max_epochs if self._trainer is not None else None
            scheduler = build_scheduler(optimizer, self.optim_cfg, max_epochs)
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    def on_train_epoch_start(self) -> None:
        opt = self.optimizers(use_pl_optimizer=False)
        self.log("lr", float(opt.param_groups[0]["lr"]), on_step=False, on_epoch=True)
