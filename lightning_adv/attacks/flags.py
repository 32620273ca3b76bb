"""The attack suite's sanity flags (:class:`~lightning_adv.attacks.report.SanityFlag`): what in a report says
that the robust accuracy may be overestimated or a certificate unsound."""
from __future__ import annotations

import torch

from .base import Attack
from .certified import certified_but_broken, is_certifier
from .report import Records, SanityFlag, SuiteReport
from .whitebox import PGD

__all__ = ["sanity_flags"]


def sanity_flags(attacks: list[Attack], records: Records, report: SuiteReport, tolerance: float,
                 cascade: bool) -> list[SanityFlag]:
    """The suite's sanity flags on its records: signs of gradient masking (a black-box attack beats every
    white-box one, more budget gives higher accuracy, eps=0 is not clean, zero or vanishing gradients) and
    certified examples broken by an attack."""
    tol, n = tolerance, report.n
    flags: list[SanityFlag] = []
    # gradient-based attacks: white-box ones and ensembles such as AutoAttack (its points count as
    # broken by gradients; AutoAttack's own Square is then not evidence of masking)
    white = [a.label for a in attacks if not a.black_box and not is_certifier(a)]
    black = [a.label for a in attacks if a.black_box]
    if white and black:
        bb = torch.zeros(n, dtype=torch.bool)
        for k in black:
            bb |= records[f"{k}/fooled"]
        wb_failed = records["clean"].clone()
        for k in white:
            wb_failed &= records[f"{k}/ran"] & ~records[f"{k}/fooled"]
        frac = float((bb & wb_failed).float().mean())
        if frac > tol:
            flags.append(SanityFlag(
                "black_box_beats_white_box",
                f"{frac:.1%} of the examples are broken by a black-box attack ({', '.join(black)}) although every "
                f"white-box attack failed on them: the gradients are likely masked", frac))
    if not cascade:
        by_acc = {r.name: r.robust_acc for r in report.rows}
        pgds = [a for a in attacks if isinstance(a, PGD)]
        for a in pgds:
            for b in pgds:
                same = (a.norm, a.eps, a.loss) == (b.norm, b.eps, b.loss)
                if same and a.budget > b.budget and by_acc[a.label] > by_acc[b.label] + tol:
                    gap = by_acc[a.label] - by_acc[b.label]
                    flags.append(SanityFlag(
                        "more_budget_higher_accuracy",
                        f"{a.label} ({a.budget} steps x restarts) has {gap:.1%} higher accuracy than {b.label} "
                        f"({b.budget}): a stronger attack should never be weaker", gap))
    if any(is_certifier(a) for a in attacks):
        flags += _certified_flags(attacks, records, report)
    if report.eps0_acc is not None and abs(report.eps0_acc - report.clean_acc) > tol:
        gap = abs(report.eps0_acc - report.clean_acc)
        flags.append(SanityFlag("eps0_not_clean",
                                f"accuracy through the attack path at eps=0 is {report.eps0_acc:.2%}, clean "
                                f"accuracy {report.clean_acc:.2%}: the model is randomised or changes mode", gap))
    if report.zero_grad_fraction is not None and report.zero_grad_fraction > tol:
        flags.append(SanityFlag("zero_gradients",
                                f"{report.zero_grad_fraction:.1%} of the examples have an exactly zero input "
                                f"gradient: a non-differentiable or saturating layer hides the gradient",
                                report.zero_grad_fraction))
    if "sanity/vanishing_ce_grad" in records:
        frac = float(records["sanity/vanishing_ce_grad"].float().mean())
        if frac > tol:
            flags.append(SanityFlag(
                "vanishing_ce_gradient",
                f"{frac:.1%} of the examples have a cross-entropy input gradient that is zero in float32 while "
                f"the logit-margin gradient is not: a saturated softmax (e.g. defensive distillation) masks "
                f"cross-entropy attacks; trust margin-loss attacks (PGD loss=margin, CW, APGD-DLR)", frac))
    return flags

def _certified_flags(attacks: list[Attack], records: Records, report: SuiteReport) -> list[SanityFlag]:
    """Soundness of the certified rows: no certified example may be broken inside its ball (a hard
    error in the tests); the notes state certified <= robust accuracy."""
    bad, pairs = certified_but_broken(records, attacks)
    worst = report.worst_case_acc
    for r in (r for r in report.rows if r.kind == "certified"):
        report.notes.append(f"certified: {r.name} proves {r.robust_acc:.2%} (a lower bound), attacks leave "
                            f"{worst:.2%} (an upper bound); its 'fooled' column counts uncertified examples")
    if not bad.any():
        return []
    frac = float(bad.float().mean())
    return [SanityFlag("certified_but_broken",
                       f"{int(bad.sum())} examples are certified yet broken by an attack inside the certified "
                       f"ball ({'; '.join(pairs)}): the certificate is unsound (a bug in the bounds or a model "
                       f"that changed between certification and attack); certified accuracy would exceed robust "
                       f"accuracy", frac)]
