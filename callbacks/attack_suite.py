"""The robustness evaluation suite as a callback of ``trainer.test``.

    python train.py test --config configs/quickstart.yaml --config configs/eval_suite.yaml \\
        --ckpt_path runs/quickstart/version_0/checkpoints/last.ckpt

On every test batch the callback runs :class:`lightning_adv.attacks.AttackSuite` on the
LightningModule's ``forward`` (eval mode, autograd re-enabled, parameters frozen) and keeps
per-example records keyed by the example's index in the test set; at the end of the epoch the
records of all DDP ranks are gathered and de-duplicated (see :mod:`lightning_adv.callbacks._suite_common`),
so the report covers every test example exactly once. Rank 0 prints the table, writes
``attack_suite.json``, ``attack_suite.csv`` and ``attack_suite_examples.csv`` into
``output_dir`` (default: the run's directory, ``logging_utils.run_dir``) and adds the table to every logger as
text; every rank logs ``test/robust_acc/<attack>`` and the worst case ``test/robust_acc``.

A :class:`~lightning_adv.callbacks.PGDEvaluation` of the same trainer hands its test attacks over (it does
not evaluate the test set itself): they run first in this suite, so ``test/robust_acc`` is the
worst case over all of them and is logged once. An attack of both with the same name and the
same settings runs once; the same name with other settings is rejected at ``setup``.

A few-shot module (one implementing :class:`lightning_adv.attacks.FewShotLearnerModule`)
is evaluated on each task's query set through ``adapted_learner(support_x, support_y)``;
the support set is never attacked.
"""
from __future__ import annotations

import os
from typing import Any, Optional

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_info

from lightning_adv.attacks import Attack, AttackSuite, SuiteReport
from lightning_adv.logging_utils import log_text, run_dir

from ._suite_common import Records, SuiteCallback, gather_records

__all__ = ["AttackSuiteEvaluation", "gather_records", "same_attack"]


def same_attack(a: Attack, b: Attack) -> bool:
    """Whether two attacks are the same attack (FGSM equals PGD with one step of eps, no random start)."""
    def key(x: Any) -> object:  # duck-typed: any attack with the PGD family's attributes
        cfg = x.config()
        if hasattr(x, "effective_step_size") and hasattr(x, "budget"):  # the PGD family
            return ("pgd", x.norm, x.eps, x.steps, x.effective_step_size, x.random_start, x.restarts,
                    x.loss, x.targeted, x.eot_samples, x.bn_mode, x.label)
        return cfg["class_path"], sorted(cfg["init_args"].items(), key=lambda kv: kv[0]).__repr__()
    return key(a) == key(b)


class AttackSuiteEvaluation(SuiteCallback):
    """Clean and robust accuracy per attack and per-example worst case on the test set.

    Args:
        attacks: the attacks (``class_path`` entries of ``lightning_adv.attacks``), in
            cascade order.
        cascade: later attacks only on still-robust points (AutoAttack's way); ``false``
            runs every attack on every clean-correct point.
        sanity_checks: eps=0 and zero-gradient checks per batch, and the flags.
        tolerance: fraction above which a sanity check flags.
        output_dir: where the JSON/CSV go (default: the run's directory,
            :func:`lightning_adv.logging_utils.run_dir`).
        filename: prefix of the files.
        limit_batches: attack only the first n test batches (None: all).
        attack_precision: ``fp32`` (default: attacks with autocast off under any Trainer precision)
            or ``trainer`` (under the Trainer's autocast; docs/precision.md).
        print_table: print the table on rank 0.
    """

    takes_test_attacks = True

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
        attack_precision: str = "fp32",
    ) -> None:
        super().__init__(limit_batches=limit_batches, attack_precision=attack_precision)
        if not filename or os.sep in filename:
            raise ValueError(f"AttackSuiteEvaluation.filename={filename!r} must be a plain file name prefix")
        self.suite = AttackSuite(attacks, cascade=cascade, sanity_checks=sanity_checks, tolerance=tolerance)
        self.output_dir = output_dir
        self.filename = filename
        self.print_table = print_table
        self.report: Optional[SuiteReport] = None
        self.paths: list[str] = []

    # ------------------------------------------------------------ the suite of the test run
    def _handed_attacks(self, trainer: pl.Trainer) -> list[Attack]:
        """Attacks other callbacks hand over for the test (PGDEvaluation), minus those the suite has."""
        own = {a.label: a for a in self.suite.attacks}
        extra: list[Attack] = []
        for cb in trainer.callbacks:
            if cb is self or not (isinstance(cb, SuiteCallback) and cb.hands_test_attacks):
                continue
            for a in cb.test_stage_attacks():
                other = own.get(a.label) or next((e for e in extra if e.label == a.label), None)
                if other is None:
                    extra.append(a)
                elif not same_attack(a, other):
                    raise ValueError(
                        f"{type(cb).__name__} and AttackSuiteEvaluation both have an attack named {a.label!r} with "
                        f"different settings ({a.config()} vs {other.config()}); set a different `name` on one")
        return extra

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._handed_attacks(trainer)  # name clashes are rejected before any training or attack

    def _stage_suite(self, trainer: pl.Trainer, stage: str) -> Optional[AttackSuite]:
        if stage != "test":
            return None
        extra = self._handed_attacks(trainer)
        if not extra:
            return self.suite
        s = self.suite
        return AttackSuite(extra + s.attacks, cascade=s.cascade, sanity_checks=s.sanity_checks,
                           tolerance=s.tolerance, bn_mode=s.bn_mode)

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.report, self.paths = None, []
        super().on_test_epoch_start(trainer, pl_module)

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._finish(trainer, pl_module, "test")

    # ------------------------------------------------------------ report
    def _publish(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str, report: SuiteReport,
                 records: Records) -> None:
        self.report = report
        pl_module.log("test/suite_n_flags", float(len(report.flags)))
        pl_module.log("test/suite_n_examples", float(report.n))
        out_dir = self.output_dir or run_dir(trainer)
        self.paths = [os.path.join(out_dir, f"{self.filename}{ext}") for ext in (".json", ".csv", "_examples.csv")]
        if not trainer.is_global_zero:
            return
        self.paths = report.write(out_dir, self.filename, records=records)
        table = report.table()
        if self.print_table:
            print(table, flush=True)
        rank_zero_info(f"attack suite report written to {self.paths[0]}")
        log_text(trainer, "test/attack_suite", "```\n" + table + "\n```", step=trainer.global_step)
