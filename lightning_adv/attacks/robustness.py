"""Publishable robustness reports: a RobustBench-style entry and a robust-accuracy-vs-eps curve.

Pure functions around :class:`AttackSuite` (no Lightning): the callback
``lightning_adv.callbacks.RobustnessReport`` feeds them, a script can too.

* :func:`curve_attack_family` -- the attacks run at one eps of the curve, by name;
* :func:`robustness_curve` -- per attack and per-example worst case, one suite run per eps,
  plus the cumulative worst case (an example broken at a smaller eps is broken at every larger
  one: the balls are nested) and sanity flags: accuracy that *rises* with eps is a sign of
  gradient masking (Athalye et al. 2018; Carlini et al. 2019, "Checklist", sec. 5);
* :func:`robustbench_entry` -- the fields of a RobustBench ``model_info`` JSON (accuracies as
  percent strings with two decimals, ``eps`` as ``"8/255"``) plus an ``evaluation`` block with
  the exact numbers, settings, versions and checkpoint hash a reviewer needs;
* :func:`plot_curve`, :func:`write_curve` -- the figure and the CSV/JSON files.
"""
from __future__ import annotations

import csv
import hashlib
import importlib.metadata
import json
import os
import platform
from dataclasses import asdict, dataclass, field
from typing import Any, Optional, Sequence

import torch
from torch import Tensor

from .autoattack import AUTOATTACK_COMPONENTS, AutoAttack
from .base import Attack
from .report import SuiteReport, worst_case
from .threat import make_threat
from .whitebox import FGSM, PGD

__all__ = ["CURVE_ATTACKS", "RobustnessCurve", "check_eps_list", "curve_attack_family", "format_eps",
           "robustness_curve", "robustbench_entry", "plot_curve", "write_curve", "versions", "sha256_file"]

#: names of the attacks a curve can run; 'autoattack' is the full standard version
CURVE_ATTACKS = ("fgsm", "pgd", *AUTOATTACK_COMPONENTS, "autoattack")
Records = dict[str, Tensor]


def format_eps(eps: float, norm: str) -> str:
    """``'8/255'`` for an Linf radius on the 1/255 grid written with many decimals (RobustBench's
    spelling of 0.0313725), else the decimal: ``'0.15'``, ``'0.2'`` (not ``'51/255'``), ``'0'``."""
    dec = f"{eps:.6g}"
    k = eps * 255
    short = "e" not in dec and len(dec.partition(".")[2]) <= 3
    if short or make_threat(norm, 0.0).name != "linf" or abs(k - round(k)) >= 1e-3:
        return dec
    return f"{round(k)}/255"


def check_eps_list(name: str, eps_list: Sequence[float], norm: str) -> list[float]:
    """A valid curve: non-empty, strictly increasing, each a valid radius of ``norm``; else ValueError."""
    values = [float(e) for e in eps_list]
    if not values:
        raise ValueError(f"{name}=[] is empty; give increasing radii, e.g. {name}=[0, 0.0078431, 0.0156863, 0.0313725]")
    for e in values:
        try:
            make_threat(norm, e)
        except ValueError as err:
            raise ValueError(f"{name} has an invalid radius {e}: {err}") from None
    if len(set(values)) != len(values):
        raise ValueError(f"{name}={values} has duplicates; list each radius once, e.g. {sorted(set(values))}")
    if values != sorted(values):
        raise ValueError(f"{name}={values} is not sorted; give it in increasing order: {sorted(values)}")
    return values


def curve_attack_family(names: Sequence[str], eps: float, norm: str = "linf", pgd_steps: int = 20,
                        pgd_restarts: int = 3, square_queries: int = 5000, seed: int = 0) -> list[Attack]:
    """The attacks of one curve point, labelled by name only (the same label at every eps).

    ``pgd``: PGD-``pgd_steps`` with ``pgd_restarts`` restarts, step 2.5 eps / steps; ``fgsm``;
    an AutoAttack component ('apgd-ce', 'apgd-t', 'fab-t', 'square') alone through the authors'
    code; ``autoattack``: all four, cascaded (the standard version).
    """
    unknown = [n for n in names if n not in CURVE_ATTACKS]
    if unknown or not names:
        raise ValueError(f"curve_attacks={list(names)} must be a non-empty list of {list(CURVE_ATTACKS)}")
    out: list[Attack] = []
    for n in names:
        if n == "pgd":
            label = f"pgd{pgd_steps}" + (f"_r{pgd_restarts}" if pgd_restarts > 1 else "")
            out.append(PGD(eps=eps, norm=norm, steps=pgd_steps, restarts=pgd_restarts, name=label))
        elif n == "fgsm":
            out.append(FGSM(eps=eps, norm=norm, name="fgsm"))
        else:
            comps = None if n == "autoattack" else [n]
            out.append(AutoAttack(eps=eps, norm=norm, components=comps, seed=seed, square_queries=square_queries,
                                  name=n if square_queries == 5000 or n not in ("square", "autoattack")
                                  else f"{n}_sq{square_queries}"))
    return out


@dataclass
class RobustnessCurve:
    norm: str
    eps: list[float]
    n: int
    clean_acc: float
    #: attack label -> robust accuracy at each eps (each attack on every clean-correct point)
    attacks: dict[str, list[float]]
    #: per-example worst case over the attacks at each eps
    worst_case: list[float]
    #: robust at eps_j only if no attack broke it at any eps_i <= eps_j (non-increasing by construction)
    worst_case_cumulative: list[float]
    flags: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def eps_str(self) -> list[str]:
        return [format_eps(e, self.norm) for e in self.eps]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "eps_str": self.eps_str, "monotone": not any(
            f["check"] == "accuracy_increases_with_eps" for f in self.flags)}


def robustness_curve(eps: Sequence[float], reports: Sequence[SuiteReport], records: Sequence[Records], norm: str,
                     tolerance: float = 0.01) -> RobustnessCurve:
    """Combine one suite run per eps (same examples, same attack labels) into a curve with flags."""
    if not (len(eps) == len(reports) == len(records)) or not eps:
        raise ValueError("robustness_curve needs one report and one record set per eps")
    index = records[0]["index"]
    for r in records[1:]:
        if not torch.equal(r["index"], index):
            raise ValueError("the curve's suite runs saw different examples; run every eps on the same data")
    labels = [row.name for row in reports[0].rows]
    attacks = {k: [next(row.robust_acc for row in rep.rows if row.name == k) for rep in reports] for k in labels}
    worst = [worst_case(rec, labels) for rec in records]
    cumulative, alive = [], torch.ones_like(worst[0])
    for w in worst:
        alive = alive & w
        cumulative.append(float(alive.float().mean()))
    curve = RobustnessCurve(norm=norm, eps=[float(e) for e in eps], n=int(index.shape[0]),
                            clean_acc=reports[0].clean_acc, attacks=attacks,
                            worst_case=[float(w.float().mean()) for w in worst], worst_case_cumulative=cumulative)
    for name, accs in [*attacks.items(), ("worst_case", curve.worst_case)]:
        for i in range(1, len(accs)):
            rise = accs[i] - min(accs[:i])
            if rise > tolerance:
                curve.flags.append({
                    "check": "accuracy_increases_with_eps", "attack": name, "eps": curve.eps[i], "value": rise,
                    "message": f"{name}: robust accuracy {accs[i]:.2%} at eps={curve.eps_str[i]} is {rise:.1%} above "
                               f"its value at a smaller eps: the attack is failing (gradient masking sign)"})
    for e, rep in zip(curve.eps, reports):
        curve.flags += [{"check": f.check, "attack": None, "eps": e, "value": f.value, "message": f.message}
                        for f in rep.flags]
    return curve


def plot_curve(curve: RobustnessCurve, title: Optional[str] = None) -> Any:
    """A matplotlib Figure (no pyplot state): accuracy (%) vs eps, one line per attack and the worst case."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    grid = curve.norm == "linf" and all(s == "0" or s.endswith("/255") for s in curve.eps_str)
    x = [e * 255 for e in curve.eps] if grid else curve.eps
    for name, accs in curve.attacks.items():
        ax.plot(x, [100 * a for a in accs], marker="o", lw=1, label=name)
    ax.plot(x, [100 * a for a in curve.worst_case], marker="s", lw=2, color="black", label="worst case")
    for f in curve.flags:
        if f["check"] == "accuracy_increases_with_eps" and f["attack"] in curve.attacks:
            i = curve.eps.index(f["eps"])
            ax.plot([x[i]], [100 * curve.attacks[f["attack"]][i]], "rx", ms=12, mew=2)
    ax.set_xlabel("eps (x 1/255)" if grid else f"eps ({curve.norm})")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or f"robust accuracy vs eps ({curve.norm}, {curve.n} examples)")
    fig.tight_layout()
    return fig


def write_curve(curve: RobustnessCurve, directory: str, prefix: str = "robust_acc_vs_eps") -> list[str]:
    """``<prefix>.json``, ``<prefix>.csv`` (one row per eps) and ``<prefix>.png``."""
    os.makedirs(directory, exist_ok=True)
    base = os.path.join(directory, prefix)
    with open(base + ".json", "w") as f:
        json.dump(curve.to_dict(), f, indent=2)
    with open(base + ".csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["eps", "eps_str", *curve.attacks, "worst_case", "worst_case_cumulative"])
        for i, e in enumerate(curve.eps):
            w.writerow([e, curve.eps_str[i], *[v[i] for v in curve.attacks.values()], curve.worst_case[i],
                        curve.worst_case_cumulative[i]])
    plot_curve(curve).savefig(base + ".png")
    return [base + ".json", base + ".csv", base + ".png"]


def versions() -> dict[str, str]:
    """Versions of everything that decides the numbers."""
    import lightning_adv

    def dist(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    return {"lightning_adv": lightning_adv.__version__, "pyautoattack": dist("pyautoattack"),
            "torch": torch.__version__, "lightning": dist("lightning"), "python": platform.python_version()}


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _pct(acc: Optional[float]) -> str:
    return "" if acc is None else f"{100 * acc:.2f}"


def robustbench_entry(report: SuiteReport, autoattack: AutoAttack, *, dataset: str, architecture: str,
                      name: str = "", link: str = "", authors: str = "", venue: str = "", additional_data: bool = False,
                      reported: Optional[float] = None, footnote: str = "", worst_case_at_eps: Optional[float] = None,
                      extra: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """A RobustBench leaderboard entry from the suite's report of one AutoAttack run.

    ``unreliable`` is true when a sanity check of the suite flagged (gradient masking signs) or
    the AutoAttack run is not the standard version; the footnote says why.
    """
    row = next(r for r in report.rows if r.name == autoattack.label)
    assert autoattack.eps is not None
    standard = autoattack.components == list(AUTOATTACK_COMPONENTS) and autoattack.square_queries == 5000
    notes = [footnote] if footnote else []
    if not standard:
        notes.append(f"Non-standard AutoAttack: components {autoattack.components}, Square "
                     f"{autoattack.square_queries} queries (standard: all four, 5000).")
    notes += [f"Sanity flag [{f.check}]: {f.message}." for f in report.flags]
    threat = {"linf": "Linf", "l2": "L2"}[autoattack.norm]
    evaluation = {
        "threat_model": threat, "norm": autoattack.norm, "eps": autoattack.eps, "n_examples": report.n,
        "clean_acc": report.clean_acc, "autoattack_acc": row.robust_acc, "worst_case_acc_at_eps": worst_case_at_eps,
        "autoattack": {"version": "standard" if standard else "custom", "components": autoattack.components,
                       "square_queries": autoattack.square_queries, "seed": autoattack.seed,
                       "label": autoattack.label, "n_fooled": row.n_fooled, "time_s": row.time_s},
        "sanity_flags": [asdict(f) for f in report.flags], "versions": versions(), "suite": report.to_dict(),
        **(extra or {}),
    }
    return {"link": link, "name": name, "authors": authors, "additional_data": additional_data,
            "number_forward_passes": 1, "dataset": dataset, "venue": venue, "architecture": architecture,
            "eps": format_eps(autoattack.eps, autoattack.norm), "clean_acc": _pct(report.clean_acc),
            "reported": _pct(reported), "autoattack_acc": _pct(row.robust_acc), "footnote": " ".join(notes),
            "unreliable": bool(report.flags) or not standard, "threat_model": threat, "evaluation": evaluation}
