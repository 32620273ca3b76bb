"""What every suite-driven evaluation callback shares: the one path robust accuracy takes.

:class:`SuiteCallback` feeds :class:`lightning_adv.attacks.AttackSuite` with the batches of a
validation or test epoch and turns its per-example records into metrics:

* image batches: records keyed by the example's index in the data set, recovered from the
  loader's batch sampler (positions as a fall-back);
* few-shot batches (a module implementing ``episodes``/``adapted_learner``): each task's
  query set, attacked through the learner adapted on the clean support; records carry an
  ``episode`` id, so accuracies also come as mean and 95% CI over episodes. A module with an
  ``adv_finetune`` attack is also evaluated at test through ``adapted_learner(...,
  adv_finetune=True)`` (MAML fine-tuned on attacked support, thesis table 5.3);
* at the end of the epoch :func:`gather_records` collects the records of every DDP rank and
  drops the duplicates ``DistributedSampler`` pads with, so every rank logs the same numbers.

Metric keys (one scheme): ``{stage}/robust_acc/{attack}`` per attack, ``{stage}/robust_acc``
the per-example worst case over every attack of the stage, ``_ci95`` variants for few-shot;
``{stage}/acc`` stays the module's own clean accuracy.
"""
from __future__ import annotations

from typing import Any, Optional

import lightning.pytorch as pl
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback
from torch import Tensor
from torch.utils.data import RandomSampler

from lightning_adv.attacks import (AttackSuite, SuiteReport, as_normal, attack_grad_context, concat_records, dedup_records,
                                   is_few_shot)
from lightning_adv.meta import episode_accuracy

__all__ = ["SuiteCallback", "gather_records", "episode_results", "Records"]

Records = dict[str, Tensor]
_LOADER_STRIDE = 1 << 40  # index offset between dataloaders (and, for fall-back positions, ranks)
_QUERY_STRIDE = 10_000  # few-shot: example index = episode id * stride + query
#: 'fp32': the suite turns autocast off (never overestimates through rounding); 'trainer': the Trainer's autocast
ATTACK_PRECISIONS = ("fp32", "trainer")


def gather_records(trainer: pl.Trainer, records: Records) -> Records:
    """The records of every DDP rank, concatenated and de-duplicated by example index.

    A collective under DDP: every rank must call it (the same number of times). On one
    process it only de-duplicates."""
    if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
        gathered: list[Any] = [None] * trainer.world_size
        dist.all_gather_object(gathered, records)
        records = concat_records([g for g in gathered if g])
    return dedup_records(records)


def episode_results(records: Records, names: list[str]) -> dict[str, dict[str, float]]:
    """Few-shot records -> ``{"acc": ..., "robust_acc": ..., "robust_acc/<attack>": ...}``, each
    ``{"mean", "ci95", "episodes"}`` over the episodes (``robust_acc``: the per-example worst case)."""
    worst = records["clean"].clone()
    columns = {"acc": records["clean"]}
    for n in names:
        worst = worst & records[f"{n}/correct"]
    columns["robust_acc"] = worst
    columns.update({f"robust_acc/{n}": records[f"{n}/correct"] for n in names})
    out = {}
    for key, col in columns.items():
        mean, ci, n_ep = episode_accuracy(col, records["episode"])
        out[key] = {"mean": mean, "ci95": ci, "episodes": n_ep}
    return out


def _advtunes(pl_module: Any, stage: str) -> bool:
    """Whether the test also evaluates the learner fine-tuned on attacked support (MAML, table 5.3)."""
    return stage == "test" and is_few_shot(pl_module) and getattr(pl_module, "adv_finetune", None) is not None


class SuiteCallback(Callback):
    """Base of the suite-driven callbacks: per-stage record collection, indices, gather, metrics.

    A subclass says which suite runs in a stage (:meth:`_stage_suite`, ``None``: not this
    epoch) and what happens with the report (:meth:`_publish`). ``reports[stage]`` and, for
    few-shot modules, ``episode_results[stage]`` hold the last results.
    """

    #: PGDEvaluation: hands its test attacks to an AttackSuiteEvaluation of the same trainer
    hands_test_attacks: bool = False
    #: AttackSuiteEvaluation: takes the test attacks of the callbacks that hand theirs over
    takes_test_attacks: bool = False

    def __init__(self, limit_batches: Optional[int] = None, attack_precision: str = "fp32") -> None:
        super().__init__()
        if attack_precision not in ATTACK_PRECISIONS:
            raise ValueError(f"{type(self).__name__}.attack_precision={attack_precision!r} is not one of "
                             f"{ATTACK_PRECISIONS} ('fp32': attacks with autocast off whatever the Trainer's precision, "
                             f"the default; 'trainer': under the Trainer's autocast, docs/precision.md)")
        self.attack_precision = attack_precision
        if limit_batches is not None and limit_batches < 1:
            raise ValueError(f"{type(self).__name__}.limit_batches must be >= 1 or null, got "
                             f"limit_batches={limit_batches}")
        self.limit_batches = limit_batches
        self.reports: dict[str, SuiteReport] = {}
        self.episode_results: dict[str, dict[str, dict[str, float]]] = {}
        self._suite: Optional[AttackSuite] = None
        self._parts: dict[str, list[Records]] = {}
        self._batch_indices: dict[int, Optional[list[list[int]]]] = {}
        self._seen: dict[int, int] = {}

    # ------------------------------------------------------------ subclass hooks
    def _stage_suite(self, trainer: pl.Trainer, stage: str) -> Optional[AttackSuite]:
        raise NotImplementedError

    def _publish(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str, report: SuiteReport,
                 records: Records) -> None:
        """After the metrics are logged: files, tables (rank 0 decides)."""

    def _wants_adversarials(self, stage: str) -> bool:
        return False

    def _show_adversarials(self, trainer: pl.Trainer, x: Tensor, adv: dict[str, tuple[Tensor, Tensor]]) -> None:
        """Called with the first batch's clean inputs and ``label -> (positions, x_adv)``."""

    # ------------------------------------------------------------ epoch start
    def _start(self, trainer: pl.Trainer, stage: str) -> None:
        self._suite = self._stage_suite(trainer, stage)
        if self._suite is not None:
            self._suite.precision = "autocast" if self.attack_precision == "trainer" else "fp32"
        self._parts, self._seen = {"": [], "advtuned": []}, {}
        self.reports.pop(stage, None)
        self.episode_results.pop(stage, None)
        loaders = trainer.test_dataloaders if stage == "test" else trainer.val_dataloaders
        loaders = [] if loaders is None else (list(loaders) if isinstance(loaders, (list, tuple)) else [loaders])
        self._batch_indices = {}
        for i, dl in enumerate(loaders):
            bs = getattr(dl, "batch_sampler", None)
            sampler = getattr(bs, "sampler", None)
            # a shuffled loader is not reproducible: positions instead (padded DDP repeats then stay in)
            self._batch_indices[i] = None if bs is None or isinstance(sampler, RandomSampler) else [list(b) for b in bs]

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start(trainer, "val")

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start(trainer, "test")

    # ------------------------------------------------------------ batches
    def _index(self, trainer: pl.Trainer, batch_idx: int, dataloader_idx: int, size: int) -> Tensor:
        known = self._batch_indices.get(dataloader_idx)
        if known is not None and batch_idx < len(known) and len(known[batch_idx]) == size:
            idx = torch.tensor(known[batch_idx], dtype=torch.long)
        else:
            start = self._seen.get(dataloader_idx, 0)
            idx = torch.arange(start, start + size) + trainer.global_rank * (_LOADER_STRIDE // 1024)
        self._seen[dataloader_idx] = self._seen.get(dataloader_idx, 0) + size
        return idx + dataloader_idx * _LOADER_STRIDE

    def _batch(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int,
               dataloader_idx: int, stage: str) -> None:
        if self._suite is None or (self.limit_batches is not None and batch_idx >= self.limit_batches):
            return
        if self.attack_precision == "trainer":  # Lightning runs callback hooks outside its autocast
            with trainer.precision_plugin.forward_context():
                self._attack_batch(trainer, pl_module, batch, batch_idx, dataloader_idx, stage)
        else:
            self._attack_batch(trainer, pl_module, batch, batch_idx, dataloader_idx, stage)

    def _attack_batch(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int,
                      dataloader_idx: int, stage: str) -> None:
        assert self._suite is not None
        sink: Optional[dict[str, tuple[Tensor, Tensor]]] = (
            {} if batch_idx == 0 and dataloader_idx == 0 and self._wants_adversarials(stage) else None)
        if is_few_shot(pl_module):
            self._few_shot_batch(trainer, pl_module, batch, batch_idx, dataloader_idx, stage, sink)
            return
        x, y = batch[0], batch[1]
        index = self._index(trainer, batch_idx, dataloader_idx, int(y.shape[0]))
        self._parts[""].append(self._suite.run_batch(pl_module, x, y, index=index, mode_module=pl_module,
                                                     adv_sink=sink))
        if sink:
            self._show_adversarials(trainer, x, sink)

    def _few_shot_batch(self, trainer: pl.Trainer, pl_module: Any, batch: Any, batch_idx: int, dataloader_idx: int,
                        stage: str, sink: Optional[dict[str, tuple[Tensor, Tensor]]]) -> None:
        assert self._suite is not None
        advtune = _advtunes(pl_module, stage)
        for task, (sx, sy, qx, qy) in enumerate(pl_module.episodes(batch)):
            # one id per (rank, batch, task): tasks are sampled per rank, nothing to de-duplicate
            episode = (trainer.global_rank * 100_000 + batch_idx) * 1_000 + task + dataloader_idx * _LOADER_STRIDE
            index = torch.arange(qy.shape[0]) + episode * _QUERY_STRIDE
            variants: list[tuple[str, dict[str, Any]]] = [("", {})] + ([("advtuned", {"adv_finetune": True})] if advtune else [])
            for variant, kwargs in variants:
                # adaptation may need autograd (MAML's inner loop, a differentiable solver head), and
                # its outputs must be normal tensors: the attacks backpropagate through them
                with attack_grad_context():
                    learner = pl_module.adapted_learner(as_normal(sx), as_normal(sy), **kwargs)
                task_sink = sink if (task == 0 and not variant) else None
                rec = self._suite.run_batch(learner, qx, qy, index=index, mode_module=learner, adv_sink=task_sink)
                rec["episode"] = torch.full((qy.shape[0],), episode, dtype=torch.long)
                self._parts[variant].append(rec)
            if task == 0 and sink:
                self._show_adversarials(trainer, qx, sink)

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                                batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._batch(trainer, pl_module, batch, batch_idx, dataloader_idx, "val")

    def on_test_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        self._batch(trainer, pl_module, batch, batch_idx, dataloader_idx, "test")

    # ------------------------------------------------------------ epoch end
    def _finish(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        suite, self._suite = self._suite, None
        if suite is None:
            return
        parts, self._parts = self._parts, {}
        for variant in ("", "advtuned"):
            if variant and not _advtunes(pl_module, stage):
                continue  # the same decision on every rank: gather_records is a collective
            records = gather_records(trainer, concat_records(parts.get(variant, [])))
            if not records:
                continue  # no batch attacked on any rank (limit_batches, empty loader)
            report = suite.report(records, warn=trainer.is_global_zero and not variant)
            self._log(pl_module, stage, variant, report, records, suite.labels)
            if not variant:
                self.reports[stage] = report
                self._publish(trainer, pl_module, stage, report, records)

    def _log(self, pl_module: pl.LightningModule, stage: str, variant: str, report: SuiteReport, records: Records,
             labels: list[str]) -> None:
        suffix = f"_{variant}" if variant else ""
        for row in report.rows:
            pl_module.log(f"{stage}/robust_acc{suffix}/{row.name}", row.robust_acc)
        pl_module.log(f"{stage}/robust_acc{suffix}", report.worst_case_acc, prog_bar=not variant)
        if variant:  # the module logs its own clean accuracy; the fine-tuned learner's is the suite's
            pl_module.log(f"{stage}/acc{suffix}", report.clean_acc)
        if "episode" not in records:
            return
        results = episode_results(records, labels)
        store = self.episode_results.setdefault(stage, {})
        for key, r in results.items():
            if key == "acc" and not variant:
                continue  # the module's own (same episodes, same adaptation)
            name = f"{key}{suffix}" if "/" not in key else key.replace("robust_acc/", f"robust_acc{suffix}/")
            store[name] = r
            pl_module.log(f"{stage}/{name}_ci95", r["ci95"])
