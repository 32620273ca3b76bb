"""Adversarial querying (thesis chapter 5, Algorithm 5): robust few-shot meta-learning.

The module is a backbone and two parts, each readable on its own:

* a **learner** (:mod:`lightning_adv.meta`): how the backbone becomes a classifier of one
  task: :class:`~lightning_adv.meta.HeadLearner` fits a closed-form head on the support
  (R2-D2, ProtoNet, MetaOptNet), :class:`~lightning_adv.meta.MAML` adapts weights by
  gradient steps (all layers or the last one, table 5.7);
* an **objective** (:mod:`lightning_adv.objectives`): ``MetaNatural``, ``AQ`` (queries
  attacked through the learner adapted on the clean support), ``MetaTRADES`` (table 5.6),
  ``ADML`` (table 5.1 baseline).

A batch is a stack of tasks ``(support_x, support_y, query_x, query_y)`` with shapes
``(T, S, C, H, W)``, ``(T, S)``, ``(T, Q, C, H, W)``, ``(T, Q)`` (``datamodules/fewshot/``).

Evaluation: the module computes the natural accuracy per episode, mean and 95% CI over all
episodes (all DDP ranks), logged as ``{val,test}/acc`` (+ ``_ci95``). Robust accuracy goes
through the project's one evaluator: the suite callbacks (``lightning_adv.callbacks.PGDEvaluation``,
``lightning_adv.callbacks.AttackSuiteEvaluation``) attack every task's queries through
:meth:`adapted_learner` (with :meth:`episodes`, the protocol other code builds on) and log
``{val,test}/robust_acc`` and ``{val,test}/robust_acc/<attack>``. ``eval_attack`` and
``test_attacks`` (table 5.11) configure the ``PGDEvaluation`` the module attaches when the
trainer has none; for MAML, ``adv_finetune`` also evaluates the learner fine-tuned on
attacked support (table 5.3: ``test/acc_advtuned``, ``test/robust_acc_advtuned``).

Differences from the authors' code (see the shared notes): the TRADES KL is over the
classes (theirs normalised over the queries); MetaOptNet's QP runs 15 iterations for the
training loss *and* the training attack, 3 at evaluation as theirs.
"""
from __future__ import annotations

from typing import Any, Iterator, Optional

import lightning.pytorch as pl
import torch
from torch import Tensor, nn

from ..attacks import PGD, LossFn, module_mode
from ..extras import require_fewshot
from ..meta import EpisodeAccuracy, HeadLearner, Learner, SingleTask, coerce_learner
from ..models import create_model, load_model_weights, model_class
from ..objectives import AQ, Objective
from .objective_training import coerce_objective, legacy_checkpoint_error
from .optim import OptimConfig, optimizers_and_schedule

__all__ = ["AdversarialQuerying"]

Batch = tuple[Tensor, Tensor, Tensor, Tensor]


class AdversarialQuerying(pl.LightningModule):
    """Few-shot meta-learning, natural or adversarially queried (Goldblum et al.).

    Args:
        arch: registered backbone (``r2d2_embedding``, ``resnet12``, ``conv4``).
        in_channels, image_size: the images (checked against the datamodule).
        mean, std: normalisation inside the backbone (None: identity, as the authors).
        arch_kwargs: extra backbone arguments (``width``, ``denoise_after``, ...).
        learner: ``HeadLearner(head=...)`` (default: R2-D2) or ``MAML(...)`` (:mod:`lightning_adv.meta`).
        objective: ``MetaNatural``, ``AQ`` (default), ``MetaTRADES`` or ``ADML``.
        eval_attack: the validation/test attack (authors: PGD-20, eval mode) of the attached
            ``PGDEvaluation`` (:meth:`configure_callbacks`).
        test_attacks: more attacks at test time, logged as ``test/robust_acc/<label>``.
        adv_finetune: MAML only: also evaluate after fine-tuning on support attacked by this
            attack at every step (7-PGD in table 5.3).
        optim: optimiser and schedule (authors: SGD Nesterov, lr 0.1, wd 5e-4, milestones
            [19, 39, 49] with ``lr_factors`` [0.06, 0.012, 0.0024]; the configs spell it out).
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
        learner: Optional[Learner] = None,
        objective: Objective = AQ(),
        eval_attack: PGD = PGD(eps=8 / 255, steps=20, step_size=2 / 255, bn_mode="eval"),
        test_attacks: Optional[list[PGD]] = None,
        adv_finetune: Optional[PGD] = None,
        optim: OptimConfig = OptimConfig(),
        init_weights: Optional[str] = None,
    ) -> None:
        super().__init__()
        require_fewshot("AdversarialQuerying")
        if not hasattr(model_class(arch), "embed"):
            raise ValueError(f"arch={arch!r} is not a few-shot backbone (no embed()); use r2d2_embedding, "
                             f"resnet12 or conv4")
        learner = HeadLearner() if learner is None else coerce_learner(learner)
        self.objective = coerce_objective(objective, "episodic", teacher=False, module="AdversarialQuerying")
        eval_attack = PGD.coerce(eval_attack, "eval_attack")
        extra = [PGD.coerce(a, "test_attacks[]") for a in (test_attacks or [])]
        if adv_finetune is not None and not learner.gradient_based:
            raise ValueError("adv_finetune (adversarial fine-tuning on the support) needs learner: MAML; closed-form "
                             "heads have no fine-tuning steps to attack. Set adv_finetune: null")
        self.adv_finetune = None if adv_finetune is None else PGD.coerce(adv_finetune, "adv_finetune")
        labels = [a.label for a in [eval_attack, *extra]]
        if len(set(labels)) != len(labels):
            raise ValueError(f"eval_attack and test_attacks have duplicate names {labels}; set `name` on each attack")
        self.optim_cfg = OptimConfig.coerce(optim)
        self.save_hyperparameters(ignore=["learner", "objective", "optim", "eval_attack", "test_attacks",
                                          "adv_finetune"])
        self.hparams.update(learner=learner.config(), objective=self.objective.config(),
                            optim=self.optim_cfg.to_dict(), eval_attack=eval_attack.config(),
                            test_attacks=[a.config() for a in extra],
                            adv_finetune=None if self.adv_finetune is None else self.adv_finetune.config())
        self.eval_attack, self.test_attacks = eval_attack, extra
        self.backbone = create_model(arch, in_channels=in_channels, input_size=image_size, mean=mean, std=std,
                                     **(arch_kwargs or {}))
        if init_weights:
            load_model_weights(self.backbone, init_weights, strict=False)
        learner.bind(self.backbone, image_size)
        self.learner = learner
        self.objective.check_module(self)
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
        self.learner.check_data(dm)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        msg = legacy_checkpoint_error(checkpoint.get("hyper_parameters"), type(self).__name__)
        if msg:
            raise ValueError(msg)

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
        differentiable w.r.t. ``query_x``. MAML adapts under ``enable_grad`` even inside
        ``trainer.test``; its adapted weights are cut from the meta-parameters' graph.
        """
        if adv_finetune and self.adv_finetune is None:
            raise ValueError("adapted_learner(adv_finetune=True) needs the module's adv_finetune attack (MAML)")
        with module_mode(self, "eval"):
            learner = self.adapt(support_x.unsqueeze(0), support_y.unsqueeze(0),
                                 adv_support=self.adv_finetune if adv_finetune else None)
        for clone in getattr(learner, "clones", []):
            # a fixed function of the queries: an outside attack (FAB calls backward()) never reaches .grad
            require_fewshot("AdversarialQuerying").utils.detach_module(clone, keep_requires_grad=False)
        return SingleTask(learner)

    def adapt(self, support_x: Tensor, support_y: Tensor, adv_support: Optional[PGD] = None) -> nn.Module:
        """Batched adaptation ``(T, S, ...) -> learner (T, Q, ...) -> (T, Q, ways)``; evaluating
        (fewer graphs, MAML's test steps) when the backbone is in eval mode."""
        return self.learner.adapt(self.backbone, support_x, support_y, not self.backbone.training, adv_support)

    def attack_tasks(self, learner: nn.Module, x: Tensor, target: Tensor, attack: PGD, loss_fn: LossFn) -> Tensor:
        """``attack`` on a stack of task sets ``x`` ``(T, N, C, H, W)`` through ``learner``
        (``target``: ``(T, N)`` labels or ``(T, N, ways)`` probabilities); only ``x`` moves."""
        t, n = x.shape[:2]

        def flat_model(z: Tensor) -> Tensor:
            return learner(z.view(t, n, *z.shape[1:])).flatten(0, 1)

        adv = attack(flat_model, x.flatten(0, 1), target.flatten(0, 1), loss_fn=loss_fn, mode_module=learner)
        return adv.view_as(x)

    # ------------------------------------------------------------------ training
    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        out = self.objective.step(self, *batch)
        qy = batch[3]
        if out.clean_logits is not None:
            self.log("train/acc", self._acc(out.clean_logits, qy).mean(), on_step=False, on_epoch=True,
                     prog_bar=out.adv_logits is None)
        if out.adv_logits is not None:
            self.log("train/adv_acc", self._acc(out.adv_logits, qy).mean(), on_step=False, on_epoch=True,
                     prog_bar=True)
        for name, value in out.logs.items():
            self.log(f"train/{name}", value, on_step=False, on_epoch=True)
        self.log("train/loss", out.loss.detach(), on_step=True, on_epoch=True)
        return out.loss

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
        from lightning_adv.callbacks import PGDEvaluation  # the callbacks package builds on this library, not the reverse

        trainer = self._trainer
        existing = [] if trainer is None else [c for c in trainer.callbacks if isinstance(c, PGDEvaluation)]
        # a config's own PGDEvaluation, or the one this module attached for an earlier fit/test: keep it
        if any(getattr(c, "from_module", None) in (None, self) for c in existing):
            return []
        cb = PGDEvaluation(attacks=[self.eval_attack], test_attacks=list(self.test_attacks))
        cb.from_module = self
        return [cb]

    def _eval_step(self, batch: Batch, stage: str) -> None:
        sx, sy, qx, qy = batch
        learner = self.adapt(sx, sy)
        with torch.no_grad():
            # checker: ModuleDict items are typed nn.Module; these are EpisodeAccuracy metrics
            self.metrics[f"{stage}_acc"].update(self._acc(learner(qx), qy))  # type: ignore[operator]

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def _log_stage(self, stage: str) -> dict[str, float]:
        metric = self.metrics[f"{stage}_acc"]
        # checker: as above
        mean, ci, n = metric.compute()  # type: ignore[operator]
        # checker: as above
        metric.reset()  # type: ignore[operator]
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
        lines = [f"Few-shot test: learner={self.learner.describe()}, objective={type(self.objective).__name__}, "
                 f"arch={hp.arch}; robust = "
                 f"worst case over {', '.join(attacks) or 'no attack'}",
                 "", "| metric | accuracy (%) | 95% CI (%) | episodes |", "|---|---|---|---|"]
        for name, r in results.items():
            lines.append(f"| {name} | {100 * r['mean']:.2f} | ± {100 * r['ci95']:.2f} | {r['episodes']} |")
        return "\n".join(lines)

    # ------------------------------------------------------------------ optim
    def configure_optimizers(self) -> Any:
        return optimizers_and_schedule(self.parameters(), self.optim_cfg,
                                       self.trainer.max_epochs if self._trainer is not None else None)

    def on_train_epoch_start(self) -> None:
        opt = self.optimizers(use_pl_optimizer=False)
        self.log("lr", float(opt.param_groups[0]["lr"]), on_step=False, on_epoch=True)
