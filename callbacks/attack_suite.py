"""The robustness evaluation suite as a callback of ``trainer.test``.

    python train.py test --config configs/quickstart.yaml --config configs/eval_suite.yaml \\
        --ckpt_path runs/quickstart/version_0/checkpoints/last.ckpt

On every test batch the callback runs :class:`lightning_adv.attacks.AttackSuite` on the
LightningModule's ``forward`` (eval mode, autograd re-enabled, parameters frozen) and keeps
per-example records keyed by the example's index in the test set. At the end of the test
epoch the records of all DDP ranks are gathered and de-duplicated by index (Lightning's
``DistributedSampler`` pads the test set with repeated examples so every rank gets the same
number), so the report covers every test example exactly once. Rank 0 prints the table,
writes ``attack_suite.json``, ``attack_suite.csv`` and ``attack_suite_examples.csv`` into
``output_dir`` (default: the run's ``trainer.log_dir``) and adds the table to TensorBoard as
text; every rank logs ``test/suite/...`` scalars (the same numbers).

A few-shot module (one implementing :class:`lightning_adv.attacks.FewShotLearnerModule`)
is evaluated on each task's query set through ``adapted_learner(support_x, support_y)``;
the support set is never attacked.
"""
from __future__ import annotations

import os
from typing import Any, Optional

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info

from lightning_adv.attacks import Attack, AttackSuite, SuiteReport

from ._suite_records import TestExampleIndex, attack_units, gather_records

__all__ = ["AttackSuiteEvaluation"]


class AttackSuiteEvaluation(Callback):
    """Clean and robust accuracy per attack and per-example worst case on the test set.

    Args:
        attacks: the attacks (``class_path`` entries of ``lightning_adv.attacks``), in
            cascade order.
        cascade: later attacks only on still-robust points (AutoAttack's way); ``false``
            runs every attack on every clean-correct point.
        sanity_checks: eps=0 and zero-gradient checks per batch, and the flags.
        tolerance: fraction above which a sanity check flags.
        output_dir: where the JSON/CSV go (default ``trainer.log_dir``, else
            ``trainer.default_root_dir``).
        filename: prefix of the files.
        limit_batches: attack only the first n test batches (None: all).
        print_table: print the table on rank 0.
    """

    def __init__(
        self,
        attacks: list[Attack],
        cascade: bool = True,
        sanity_checks: bool = True,
        tolerance: float = 0.01,
        output_dir: Optional[str] = None,
        filename: str = "attack_suite",
        limit_batches: Optional[int] = None,
        print_table: bool = True,
    ) -> None:
        super().__init__()
        if limit_batches is not None and limit_batches < 1:
            raise ValueError(f"AttackSuiteEvaluation.limit_batches must be >= 1 or null, got limit_batches={limit_batches}")
        if not filename or os.sep in filename:
            raise ValueError(f"AttackSuiteEvaluation.filename={filename!r} must be a plain file name prefix")
        self.suite = AttackSuite(attacks, cascade=cascade, sanity_checks=sanity_checks, tolerance=tolerance)
        self.output_dir = output_dir
        self.filename = filename
        self.limit_batches = limit_batches
        self.print_table = print_table
        self.report: Optional[SuiteReport] = None
        self.paths: list[str] = []
        self._parts: list[dict[str, torch.Tensor]] = []
        self._index = TestExampleIndex("AttackSuiteEvaluation")

    # ------------------------------------------------------------ batches
    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._parts, self.report, self.paths = [], None, []
        self._index.reset(trainer)

    def on_test_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        if self.limit_batches is not None and batch_idx >= self.limit_batches:
            return
        for unit in attack_units(trainer, pl_module, batch, batch_idx, dataloader_idx, self._index):
            self._parts.append(self.suite.run_batch(unit.model, unit.x, unit.y, index=unit.index,
                                                    mode_module=unit.mode_module))

    # ------------------------------------------------------------ epoch end
    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        records = gather_records(trainer, self._parts)
        self._parts = []
        report = self.suite.report(records, warn=trainer.is_global_zero)
        self.report = report
        for row in report.rows:
            pl_module.log(f"test/suite/robust_acc/{row.name}", row.robust_acc)
        pl_module.log("test/suite/clean_acc", report.clean_acc)
        pl_module.log("test/suite/worst_case", report.worst_case_acc)
        pl_module.log("test/suite/n_flags", float(len(report.flags)))
        pl_module.log("test/suite/n_examples", float(report.n))
        out_dir = self.output_dir or trainer.log_dir or trainer.default_root_dir
        self.paths = [os.path.join(out_dir, f"{self.filename}{ext}") for ext in (".json", ".csv", "_examples.csv")]
        if trainer.is_global_zero:
            self.paths = report.write(out_dir, self.filename, records=records)
            table = report.table()
            if self.print_table:
                print(table, flush=True)
            rank_zero_info(f"attack suite report written to {self.paths[0]}")
            for lg in trainer.loggers:
                if isinstance(lg, TensorBoardLogger):
                    lg.experiment.add_text("test/attack_suite", "```\n" + table + "\n```",
                                           global_step=trainer.global_step)
