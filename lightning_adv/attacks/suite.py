"""The robustness evaluation suite: run attacks, keep per-example results, report, flag.

:class:`AttackSuite` runs a list of :class:`~.base.Attack` on batches and returns, per
example, whether it was classified correctly clean and after each attack, the
perturbation norm, the queries of black-box attacks and the time spent. Records of many
batches (and of many DDP ranks) are concatenated, de-duplicated by example index, and
turned into a :class:`SuiteReport`: per attack robust accuracy, mean and max
perturbation norm of the adversarial examples found, queries, time; the per-example
worst case over the suite; sanity flags.

Modes:

* ``cascade=True`` (AutoAttack's way): an attack only runs on points every earlier attack
  failed on; an attack's ``robust_acc`` is the accuracy after it and all earlier ones;
* ``cascade=False``: every attack runs on every clean-correct point; ``robust_acc`` is
  its own accuracy. The worst case is the same either way (up to attack randomness).

Sanity flags (gradient masking, Athalye et al. 2018; Carlini et al. 2019), each raised as
a :class:`GradientMaskingWarning` and written into the report:

* ``black_box_beats_white_box``: more than ``tolerance`` of the points are broken by a
  black-box attack although every gradient-based attack (white-box, or an ensemble such
  as AutoAttack) that ran on them failed;
* ``more_budget_higher_accuracy`` (run-all mode): a PGD attack (FGSM included) with more
  steps x restarts than another of the same norm, eps and loss has higher accuracy;
* ``eps0_not_clean``: the attack path with a zero perturbation does not reproduce the
  clean accuracy (a randomised model, or a mode that differs during attacks);
* ``zero_gradients``: more than ``tolerance`` of the points have an exactly zero input
  gradient of the logit margin (a non-differentiable or saturated layer).
* ``vanishing_ce_gradient``: more than ``tolerance`` of the points have a cross-entropy
  input gradient that is zero in float32 (every entry zero or subnormal) while the
  logit-margin gradient is not: a saturated softmax, as defensive distillation's ~T times
  larger logits make it (Carlini & Wagner 2016), hides the gradient from cross-entropy
  attacks only; margin-loss attacks (PGD ``loss='margin'``, CW, APGD-DLR) still see it.

Few-shot: a LightningModule implementing :class:`FewShotLearnerModule` is evaluated on
each task's query set through the learner adapted on the clean support set.
"""
from __future__ import annotations

import contextlib
import time
import warnings
from typing import Any, Iterable, Optional, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from .base import Attack, Model
from .certified import is_certifier
from .flags import sanity_flags
from .losses import cross_entropy_loss, margin_loss
from .context import as_normal, attack_grad_context, module_mode
from .report import (AttackRow, Records, SanityFlag, SuiteReport, concat_records, dedup_records, extra_means,
                     threat_key, worst_case)
from .whitebox import PGD
from ..validation import check_real

__all__ = [
    "AttackSuite", "AttackRow", "SuiteReport", "SanityFlag", "GradientMaskingWarning", "FewShotLearnerModule",
    "is_few_shot", "evaluate", "concat_records", "dedup_records",
]

class GradientMaskingWarning(UserWarning):
    """A sanity check of the suite failed: robust accuracies may be overestimated."""


@runtime_checkable
class FewShotLearnerModule(Protocol):
    """What a few-shot LightningModule exposes for the suite.

    ``episodes(batch)`` yields ``(support_x, support_y, query_x, query_y)`` per task
    (labels 0..ways-1, images in [0, 1]); ``adapted_learner(support_x, support_y)``
    returns a module adapted on the clean support whose ``forward(query_x)`` gives
    logits over the task's ways, differentiable w.r.t. ``query_x``. The support set is
    never attacked.
    """

    def episodes(self, batch: Any) -> Iterable[tuple[Tensor, Tensor, Tensor, Tensor]]: ...

    def adapted_learner(self, support_x: Tensor, support_y: Tensor) -> nn.Module: ...


def is_few_shot(module: Any) -> bool:
    return callable(getattr(module, "episodes", None)) and callable(getattr(module, "adapted_learner", None))


# ------------------------------------------------------------------ suite
#: where the suite runs: autocast off (fp32), or under the caller's autocast
SUITE_PRECISIONS = ("fp32", "autocast")


class AttackSuite:
    """Run attacks on batches and build the report.

    Args:
        attacks: the attacks, in cascade order (put black-box attacks last, as
            AutoAttack does, so the black-box check sees points every white-box attack
            failed on).
        cascade: later attacks only on still-robust points; ``False`` runs all on all.
        sanity_checks: compute the eps=0 and zero-gradient checks (one forward and one
            backward per batch) and raise the flags.
        tolerance: fraction of examples (or accuracy difference) above which a check flags.
        bn_mode: mode of the model for the clean and sanity forwards.
        attack_misclassified: run-all mode only: attack every example, the clean-misclassified
            ones too (they count as not robust either way). Every batch then runs every attack
            on the whole batch, so each DDP rank runs the same number of attack forwards
            (SyncBatchNorm in train mode all-reduces on each forward); otherwise a batch
            without a clean-correct point skips the attack.
        precision: ``fp32`` (default): clean forwards and attacks run with autocast off, even
            when the caller is inside one (a half-precision forward can round small logit
            differences and input gradients to zero, which masks gradients and overestimates
            robustness); ``autocast``: under whatever autocast the caller has on (faster; check
            it against ``fp32``, ``docs/precision.md``).
    """

    def __init__(self, attacks: list[Attack], cascade: bool = True, sanity_checks: bool = True,
                 tolerance: float = 0.01, bn_mode: str = "eval", attack_misclassified: bool = False,
                 precision: str = "fp32") -> None:
        if precision not in SUITE_PRECISIONS:
            raise ValueError(f"AttackSuite.precision={precision!r} is not one of {SUITE_PRECISIONS} ('fp32': attacks "
                             f"with autocast off, the default that never overestimates robustness through rounding)")
        self.precision = precision
        attacks = list(attacks)
        if not attacks:
            raise ValueError("AttackSuite.attacks is empty; give at least one attack")
        for a in attacks:
            if not isinstance(a, Attack):
                raise ValueError(f"AttackSuite.attacks must be Attack objects (lightning_adv.attacks), got {a!r}")
        labels = [a.label for a in attacks]
        if len(set(labels)) != len(labels):
            raise ValueError(f"AttackSuite.attacks have duplicate names {labels}; set `name` on each attack")
        check_real("tolerance", tolerance, minimum=0.0, maximum=1.0, below_max=True)
        self.attacks = attacks
        self.cascade = cascade
        self.sanity_checks = sanity_checks
        self.tolerance = float(tolerance)
        self.bn_mode = bn_mode
        if attack_misclassified and cascade:
            raise ValueError("attack_misclassified=True needs cascade=False (a cascade only attacks still-robust "
                             "points)")
        self.attack_misclassified = bool(attack_misclassified)

    @property
    def labels(self) -> list[str]:
        return [a.label for a in self.attacks]

    @property
    def attack_labels(self) -> list[str]:
        """The attacks proper (certified rows excluded): what the per-example worst case is taken over."""
        return [a.label for a in self.attacks if not is_certifier(a)]

    def run_batch(self, model: Model, x: Tensor, y: Tensor, index: Optional[Tensor] = None,
                  mode_module: Optional[nn.Module] = None,
                  adv_sink: Optional[dict[str, tuple[Tensor, Tensor]]] = None) -> Records:
        """Per-example records (CPU tensors) for one batch; ``index`` identifies examples.

        ``adv_sink``: if given, receives ``label -> (positions in the batch, adversarial inputs)``
        for each attack that ran (what an image grid shows; records stay small)."""
        if mode_module is None and isinstance(model, nn.Module):
            mode_module = model
        autocast = (contextlib.nullcontext() if self.precision == "autocast"
                    else torch.autocast(x.device.type, enabled=False))
        with torch.inference_mode(False), autocast:  # under trainer.test's inference mode: normal tensors throughout
            return self._run_batch(model, x, y, index, mode_module, adv_sink)

    def _run_batch(self, model: Model, x: Tensor, y: Tensor, index: Optional[Tensor],
                   mode_module: Optional[nn.Module], adv_sink: Optional[dict[str, tuple[Tensor, Tensor]]]) -> Records:
        x, y = as_normal(x), as_normal(y)
        b = y.shape[0]
        if index is None:
            index = torch.arange(b)
        with torch.no_grad(), module_mode(mode_module, self.bn_mode):
            clean = model(x).argmax(1) == y
        rec: Records = {"index": index.detach().cpu().long(), "label": y.detach().cpu().long(), "clean": clean.cpu()}
        if self.sanity_checks:
            zero = PGD(eps=0.0, steps=1, bn_mode=self.bn_mode).run(model, x, y, mode_module=mode_module).x_adv
            with torch.no_grad(), module_mode(mode_module, self.bn_mode):
                rec["sanity/eps0_correct"] = (model(zero).argmax(1) == y).cpu()
            with attack_grad_context(), module_mode(mode_module, self.bn_mode):
                xg = x.clone().requires_grad_(True)
                logits = model(xg)
                (g,) = torch.autograd.grad(margin_loss(logits, y).sum(), xg, retain_graph=True)
                (g_ce,) = torch.autograd.grad(cross_entropy_loss(logits, y).sum(), xg)
            zero_margin = g.flatten(1).abs().sum(1) == 0
            rec["sanity/zero_grad"] = zero_margin.cpu()
            # zero or subnormal (flush-to-zero hardware reads subnormals as zero) where the margin's is not
            ce_gone = g_ce.flatten(1).abs().amax(1) < torch.finfo(g_ce.dtype).tiny
            rec["sanity/vanishing_ce_grad"] = (ce_gone & ~zero_margin).cpu()
        robust = clean.clone()
        for attack in self.attacks:
            certifier = is_certifier(attack)  # certified rows: every clean-correct point, outside the cascade
            if certifier:
                todo = clean
            elif self.cascade:
                todo = robust
            else:
                todo = torch.ones_like(clean) if self.attack_misclassified else clean
            idx = todo.nonzero().squeeze(1)
            correct = todo & clean
            norms = torch.full((b,), float("nan"))
            queries = torch.full((b,), -1, dtype=torch.long)
            fooled = torch.zeros(b, dtype=torch.bool)
            extras: dict[str, Tensor] = {}
            t0 = time.perf_counter()
            if idx.numel() > 0 and certifier:
                # checker: is_certifier(attack) checked the certify method
                ok = attack.certify(model, x[idx], y[idx], mode_module=mode_module).to(correct.device)  # type: ignore[attr-defined]
                correct[idx] = ok
                fooled[idx.cpu()] = ~ok.cpu()  # of a certified row: not certified
            elif idx.numel() > 0:
                out = attack.run(model, x[idx], y[idx], mode_module=mode_module)
                with torch.no_grad(), module_mode(mode_module, self.bn_mode):
                    ok = model(out.x_adv).argmax(1) == y[idx]
                ok = ok & clean[idx]  # a clean-misclassified point (attack_misclassified) is never robust
                correct[idx] = ok
                fooled[idx.cpu()] = (~ok & clean[idx]).cpu()
                if adv_sink is not None:
                    adv_sink[attack.label] = (idx.detach(), out.x_adv.detach())
                norms[idx.cpu()] = attack.perturbation_size(x[idx], out.x_adv).detach().float().cpu()
                if out.queries is not None:
                    queries[idx.cpu()] = out.queries.cpu().long()
                for key, value in out.extras.items():
                    col = torch.full((b,), float("nan"), dtype=torch.float64)
                    col[idx.cpu()] = value.detach().double().cpu()
                    extras[key] = col
            elapsed = time.perf_counter() - t0
            ran = torch.zeros(b, dtype=torch.bool)
            ran[idx.cpu()] = True
            if self.cascade and not certifier:
                robust = correct
            n = attack.label
            rec[f"{n}/correct"] = correct.cpu()
            rec[f"{n}/ran"] = ran
            rec[f"{n}/fooled"] = fooled
            rec[f"{n}/norm"] = norms
            rec[f"{n}/queries"] = queries
            rec[f"{n}/time"] = torch.full((b,), elapsed / b, dtype=torch.float64)
            for key, col in extras.items():
                rec[f"{n}/extra/{key}"] = col
        return rec

    def evaluate(self, model: Model, x: Tensor, y: Tensor, batch_size: int = 256,
                 mode_module: Optional[nn.Module] = None, warn: bool = True) -> tuple[SuiteReport, Records]:
        """Attack a whole tensor data set in batches; returns the report and the records."""
        parts = [self.run_batch(model, x[i:i + batch_size], y[i:i + batch_size],
                                index=torch.arange(i, min(i + batch_size, x.shape[0])), mode_module=mode_module)
                 for i in range(0, x.shape[0], batch_size)]
        records = concat_records(parts)
        return self.report(records, warn=warn), records

    # -------------------------------------------------------------- report
    def report(self, records: Records, warn: bool = True) -> SuiteReport:
        n = int(records["index"].shape[0]) if records else 0
        if n == 0:
            raise ValueError("the attack suite saw no examples (is the test set empty or limit_batches 0?)")
        clean = records["clean"]
        rows = []
        for a in self.attacks:
            k = a.label
            ran, fooled = records[f"{k}/ran"], records[f"{k}/fooled"]
            norms = records[f"{k}/norm"][fooled]
            q = records[f"{k}/queries"][ran]
            has_q = a.black_box and q.numel() > 0
            rows.append(AttackRow(
                name=k, kind=a.kind, norm=a.norm, eps=a.eps,
                robust_acc=float(records[f"{k}/correct"].float().mean()), n_attacked=int(ran.sum()),
                n_fooled=int(fooled.sum()),
                mean_norm=float(norms.mean()) if norms.numel() else None,
                max_norm=float(norms.max()) if norms.numel() else None,
                mean_queries=float(q.float().mean()) if has_q else None,
                max_queries=int(q.max()) if has_q else None,
                time_s=float(records[f"{k}/time"].sum()),
                extras=extra_means(records, k, fooled), extras_all=extra_means(records, k, ran),
            ))
        worst = worst_case(records, self.attack_labels)
        report = SuiteReport(n=n, clean_acc=float(clean.float().mean()), worst_case_acc=float(worst.float().mean()),
                             mode="cascade" if self.cascade else "run-all", rows=rows)
        groups: dict[str, list[str]] = {}
        for a in self.attacks:
            key = threat_key(a)
            if key is not None and not is_certifier(a):
                groups.setdefault(key, []).append(a.label)
        if len(groups) > 1 or len(groups) == 1 and sum(map(len, groups.values())) < len(self.attack_labels):
            report.worst_case_by_threat = {k: float(worst_case(records, v).float().mean()) for k, v in groups.items()}
        if "sanity/eps0_correct" in records:
            report.eps0_acc = float(records["sanity/eps0_correct"].float().mean())
            report.zero_grad_fraction = float(records["sanity/zero_grad"].float().mean())
        report.flags = sanity_flags(self.attacks, records, report, self.tolerance, self.cascade)
        if self.cascade:
            report.notes.append("cascade: robust_acc of an attack is the accuracy after it and all earlier attacks; "
                                "the more-budget check needs cascade=false")
        if warn:
            for f in report.flags:
                warnings.warn(f"attack suite [{f.check}]: {f.message}", GradientMaskingWarning, stacklevel=2)
        return report


def evaluate(model: nn.Module, x: Tensor, y: Tensor, attacks: list[Attack], cascade: bool = True,
             batch_size: int = 256, tolerance: float = 0.01) -> SuiteReport:
    """RobustBench-style one call: ``evaluate(model, x, y, [AutoAttack(eps=8/255)])``."""
    return AttackSuite(attacks, cascade=cascade, tolerance=tolerance).evaluate(model, x, y, batch_size=batch_size)[0]
