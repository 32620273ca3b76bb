"""A report a researcher can publish: RobustBench-style JSON and a robust-accuracy-vs-eps curve.

    python train.py test --config configs/quickstart.yaml --config configs/eval_robustbench_digits.yaml \\
        --ckpt_path runs/quickstart/version_0/checkpoints/last.ckpt

On every test batch the callback (a :class:`SuiteCallback`: example indices from the test
loader, DDP gathering and de-duplication as in :class:`AttackSuiteEvaluation`) runs
:class:`lightning_adv.attacks.AttackSuite` (the one evaluator) with AutoAttack at the threat
model's ``eps``, and, for each radius of ``eps_curve``, one more suite run of the curve's attack
family (each attack on every clean-correct point, per-example worst case). At the end of the
test epoch the records of all DDP ranks are gathered and de-duplicated by example index
(``gather_records``); rank 0 writes into ``output_dir`` (default: the run's directory, ``logging_utils.run_dir``):

* ``robustbench.json`` -- the RobustBench leaderboard fields plus an ``evaluation`` block (exact
  accuracies, threat model, n, settings, sanity flags, versions, checkpoint path and sha256,
  the suite's full report);
* ``robust_acc_vs_eps.{json,csv,png}`` -- the curve per attack, worst case, cumulative worst
  case, and the monotonicity flags (accuracy rising with eps: gradient masking sign).

The figure goes to every logger (TensorBoard, CSV, W&B, MLflow: ``lightning_adv.logging_utils``); every
logger gets the scalars ``test/robustbench/...`` and ``test/robust_acc_vs_eps/...``. Bad values
(an empty, unsorted, negative or repeated eps list, an unknown attack name, an output directory
that cannot be written) raise ``ValueError`` in the constructor or ``setup``, before any attack.
"""
from __future__ import annotations

import json
import os
import tempfile
import warnings
from typing import Any, Optional

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_info

from lightning_adv.attacks import (AUTOATTACK_COMPONENTS, AttackSuite, AutoAttack, GradientMaskingWarning, SuiteReport,
                                   concat_records, is_few_shot, worst_case)
from lightning_adv.attacks.robustness import (CURVE_ATTACKS, RobustnessCurve, check_eps_list, curve_attack_family,
                                              plot_curve, robustbench_entry, robustness_curve, sha256_file,
                                              write_curve)

from lightning_adv.logging_utils import log_figure, run_dir

from ._suite_common import SuiteCallback, gather_records

__all__ = ["RobustnessReport", "DEFAULT_CURVE_ATTACKS"]

DEFAULT_CURVE_ATTACKS = ("pgd", "apgd-ce", "apgd-t")


class RobustnessReport(SuiteCallback):
    """AutoAttack at ``eps`` as a RobustBench entry, and robust accuracy over ``eps_curve``.

    Args:
        eps: radius of the threat model (pixel units; CIFAR Linf: 8/255 = 0.0313725).
        norm: 'linf' or 'l2'.
        eps_curve: increasing radii of the curve (``None``: no curve). Include 0: its point must
            equal the clean accuracy.
        curve_attacks: the attack family of each curve point, from ``CURVE_ATTACKS``: 'pgd'
            (PGD-``pgd_steps``, ``pgd_restarts`` restarts), 'fgsm', an AutoAttack component
            ('apgd-ce', 'apgd-t', 'fab-t', 'square') alone, 'autoattack' (all four, cascaded).
        curve_full_autoattack: replace the AutoAttack components of ``curve_attacks`` by the full
            standard AutoAttack at every eps.
        pgd_steps, pgd_restarts: the curve's PGD.
        square_queries: Square's budget in every AutoAttack run (5000 = standard; anything else is
            reported as non-standard).
        seed: AutoAttack's seed.
        tolerance: accuracy difference above which a sanity check flags.
        output_dir: where the files go (default: the run's directory, ``logging_utils.run_dir``).
        limit_batches: attack only the first n test batches (None: all).
        model_name, link, authors, venue, additional_data, reported, footnote: RobustBench fields.
        dataset, architecture: RobustBench fields; default: from the datamodule's class and the
            module's ``arch`` hyperparameter.
        print_summary: print the numbers on rank 0.
    """

    def __init__(self, eps: float, norm: str = "linf", eps_curve: Optional[list[float]] = None,
                 curve_attacks: Optional[list[str]] = None, curve_full_autoattack: bool = False, pgd_steps: int = 20,
                 pgd_restarts: int = 3, square_queries: int = 5000, seed: int = 0, tolerance: float = 0.01,
                 output_dir: Optional[str] = None, limit_batches: Optional[int] = None, model_name: str = "",
                 link: str = "", authors: str = "", venue: str = "", additional_data: bool = False,
                 reported: Optional[float] = None, footnote: str = "", dataset: Optional[str] = None,
                 architecture: Optional[str] = None, print_summary: bool = True) -> None:
        super().__init__(limit_batches=limit_batches)
        if eps <= 0:
            raise ValueError(f"RobustnessReport.eps={eps} must be > 0 (the threat model's radius, e.g. 0.0313725)")
        self.autoattack = AutoAttack(eps=eps, norm=norm, seed=seed, square_queries=square_queries)
        self.suite = AttackSuite([self.autoattack], cascade=True, sanity_checks=True, tolerance=tolerance)
        self.norm, self.eps, self.tolerance = self.autoattack.norm, float(eps), float(tolerance)
        self.eps_curve = None if eps_curve is None else check_eps_list("RobustnessReport.eps_curve", eps_curve, norm)
        names = list(DEFAULT_CURVE_ATTACKS if curve_attacks is None else curve_attacks)
        unknown = [n for n in names if n not in CURVE_ATTACKS]
        if unknown or not names:
            raise ValueError(f"RobustnessReport.curve_attacks={names}: unknown {unknown or 'empty list'}; "
                             f"choose from {list(CURVE_ATTACKS)}")
        if curve_full_autoattack:
            names = [n for n in names if n not in (*AUTOATTACK_COMPONENTS, "autoattack")] + ["autoattack"]
        self.curve_attacks = names
        self.curve_suites = [AttackSuite(curve_attack_family(names, e, norm, pgd_steps, pgd_restarts, square_queries,
                                                             seed), cascade=False, sanity_checks=False,
                                         tolerance=tolerance) for e in (self.eps_curve or [])]
        self.output_dir, self.print_summary = output_dir, print_summary
        self.meta: dict[str, Any] = dict(name=model_name, link=link, authors=authors, venue=venue,
                                         additional_data=additional_data, reported=reported, footnote=footnote)
        self.dataset, self.architecture = dataset, architecture
        self.report: Optional[SuiteReport] = None
        self.curve: Optional[RobustnessCurve] = None
        self.entry: Optional[dict[str, Any]] = None
        self.paths: list[str] = []
        self._curve_parts: list[list[dict[str, torch.Tensor]]] = []

    # ------------------------------------------------------------ checks before any attack
    def _out_dir(self, trainer: pl.Trainer) -> str:
        return self.output_dir or run_dir(trainer)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if is_few_shot(pl_module):
            raise ValueError(f"RobustnessReport evaluates classifiers, got the few-shot module "
                             f"{type(pl_module).__name__}; use lightning_adv.callbacks.AttackSuiteEvaluation (mean and 95% CI "
                             "over episodes) instead")
        out = self._out_dir(trainer)
        try:
            os.makedirs(out, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=out, prefix=".robustness_report_write_test_"):
                pass
        except OSError as err:
            raise ValueError(f"RobustnessReport.output_dir={out!r} is not writable ({err.strerror}); set output_dir "
                             "(or --trainer.default_root_dir / the logger's save_dir) to a writable directory"
                             ) from None

    # ------------------------------------------------------------ batches
    def _stage_suite(self, trainer: pl.Trainer, stage: str) -> Optional[AttackSuite]:
        return self.suite if stage == "test" else None

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.report, self.curve, self.entry, self.paths = None, None, None, []
        self._curve_parts = [[] for _ in self.curve_suites]
        super().on_test_epoch_start(trainer, pl_module)

    def _batch(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int,
               dataloader_idx: int, stage: str) -> None:
        """AutoAttack and every curve point on the same examples (the same index keys)."""
        if self._suite is None or (self.limit_batches is not None and batch_idx >= self.limit_batches):
            return
        x, y = batch[0], batch[1]
        index = self._index(trainer, batch_idx, dataloader_idx, int(y.shape[0]))
        for parts, suite in zip([self._parts[""], *self._curve_parts], [self._suite, *self.curve_suites]):
            parts.append(suite.run_batch(pl_module, x, y, index=index, mode_module=pl_module))

    # ------------------------------------------------------------ epoch end
    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._suite is None:
            return
        zero = trainer.is_global_zero
        # a collective per suite: every rank, same order
        records = [gather_records(trainer, concat_records(parts))
                   for parts in [self._parts.get("", []), *self._curve_parts]]
        self._suite, self._parts, self._curve_parts = None, {}, []
        self.report = self.suite.report(records[0], warn=zero)
        worst_at_eps = None
        if self.curve_suites:
            reports = [s.report(r, warn=False) for s, r in zip(self.curve_suites, records[1:])]
            self.curve = robustness_curve(self.eps_curve or [], reports, records[1:], self.norm, self.tolerance)
            if zero:
                for f in self.curve.flags:
                    warnings.warn(f"robustness curve [{f['check']}] eps={f['eps']:g}: {f['message']}",
                                  GradientMaskingWarning, stacklevel=2)
            worst_at_eps = self._worst_at_eps(records)
        self._log_report(pl_module)
        if zero:
            self._write(trainer, pl_module, worst_at_eps)

    def _worst_at_eps(self, records: list[dict[str, torch.Tensor]]) -> Optional[float]:
        """Per-example worst case of AutoAttack and the curve's attacks at the threat model's eps."""
        for k, e in enumerate(self.eps_curve or []):
            if abs(e - self.eps) < 1e-6 and torch.equal(records[0]["index"], records[k + 1]["index"]):
                both = worst_case(records[0], [self.autoattack.label]) & worst_case(records[k + 1],
                                                                                    self.curve_suites[k].labels)
                return float(both.float().mean())
        return None

    def _log_report(self, pl_module: pl.LightningModule) -> None:
        assert self.report is not None
        pl_module.log("test/robustbench/clean_acc", self.report.clean_acc)
        pl_module.log("test/robustbench/autoattack_acc", self.report.rows[0].robust_acc)
        pl_module.log("test/robustbench/n_flags", float(len(self.report.flags)))
        if self.curve is not None:
            for i, e in enumerate(self.curve.eps):
                for name, accs in [*self.curve.attacks.items(), ("worst_case", self.curve.worst_case)]:
                    pl_module.log(f"test/robust_acc_vs_eps/{name}/eps{e:.6g}", accs[i])
            pl_module.log("test/robust_acc_vs_eps/n_flags", float(len(self.curve.flags)))

    def _write(self, trainer: pl.Trainer, pl_module: pl.LightningModule, worst_at_eps: Optional[float]) -> None:
        assert self.report is not None
        out = self._out_dir(trainer)
        ckpt = trainer.ckpt_path
        ckpt_info = {"path": None if ckpt is None else str(ckpt),
                     "sha256": sha256_file(str(ckpt)) if ckpt is not None and os.path.isfile(str(ckpt)) else None}
        dm = trainer.datamodule
        dataset = self.dataset or (type(dm).__name__.lower().replace("datamodule", "") if dm is not None else "")
        hp = getattr(pl_module, "hparams", {})
        arch = self.architecture or str(hp.get("arch", type(pl_module).__name__))
        extra: dict[str, Any] = {"checkpoint": ckpt_info, "global_seed": os.environ.get("PL_GLOBAL_SEED"),
                                 "module": type(pl_module).__name__, "robust_acc_vs_eps": None}
        self.paths = []
        if self.curve is not None:
            self.paths = write_curve(self.curve, out)
            extra["robust_acc_vs_eps"] = os.path.basename(self.paths[0])
            extra["curve_flags"] = self.curve.flags
            log_figure(trainer, "test/robust_acc_vs_eps", plot_curve(self.curve), step=trainer.global_step)
        self.entry = robustbench_entry(self.report, self.autoattack, dataset=dataset, architecture=arch,
                                       worst_case_at_eps=worst_at_eps, extra=extra, **self.meta)
        path = os.path.join(out, "robustbench.json")
        with open(path, "w") as f:
            json.dump(self.entry, f, indent=2)
        self.paths.insert(0, path)
        if self.print_summary:
            print(self._summary(), flush=True)
        rank_zero_info(f"robustness report written to {', '.join(self.paths)}")

    def _summary(self) -> str:
        assert self.report is not None and self.entry is not None
        e = self.entry
        lines = [f"RobustBench entry ({e['threat_model']}, eps {e['eps']}, {self.report.n} examples): clean "
                 f"{e['clean_acc']}%, AutoAttack {e['autoattack_acc']}% ({e['evaluation']['autoattack']['version']})"]
        if self.curve is not None:
            names = [*self.curve.attacks, "worst_case"]
            lines.append("| eps | " + " | ".join(names) + " |")
            lines.append("|" + "---|" * (len(names) + 1))
            for i, s in enumerate(self.curve.eps_str):
                vals = [v[i] for v in self.curve.attacks.values()] + [self.curve.worst_case[i]]
                lines.append(f"| {s} | " + " | ".join(f"{100 * v:.2f}" for v in vals) + " |")
            flags = [f for f in self.curve.flags if f["check"] == "accuracy_increases_with_eps"]
            lines.append(f"WARNING: {len(flags)} point(s) where accuracy rises with eps" if flags
                         else "curve: accuracy non-increasing in eps for every attack")
        lines += [f"WARNING [{f.check}] {f.message}" for f in self.report.flags]
        return "\n".join(lines)
