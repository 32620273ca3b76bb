"""The suite's report: per-attack rows, sanity flags, the per-example worst case, and the
per-example records of many batches (and DDP ranks) concatenated and de-duplicated.

A record is a dict of (B,) CPU tensors: ``index``, ``label``, ``clean`` and, per attack
``<label>/{correct,ran,fooled,norm,queries,time}`` (plus ``<label>/extra/<name>`` for an attack's
own measures). :class:`SuiteReport` is what :class:`~.suite.AttackSuite.report` builds from them.
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

import torch
from torch import Tensor

from .base import Attack

__all__ = ["AttackRow", "SanityFlag", "SuiteReport", "Records", "threat_key", "concat_records", "dedup_records",
           "extra_means", "worst_case"]

Records = dict[str, Tensor]


@dataclass
class AttackRow:
    name: str
    kind: str
    norm: str
    eps: Optional[float]
    robust_acc: float
    n_attacked: int
    n_fooled: int
    mean_norm: Optional[float]
    max_norm: Optional[float]
    mean_queries: Optional[float]
    max_queries: Optional[int]
    time_s: float
    #: means over the **successful** attacks (the ``n_fooled`` examples) of the attack's own per-example
    #: measures (``AttackOutput.extras``), as the thesis' table 3.2 averages capital and relative size;
    #: NaN when no attack succeeded
    extras: dict[str, float] = field(default_factory=dict)
    #: the same measures averaged over every attacked example (``n_attacked``), failed attacks included
    extras_all: dict[str, float] = field(default_factory=dict)


@dataclass
class SanityFlag:
    check: str
    message: str
    value: float


@dataclass
class SuiteReport:
    n: int
    clean_acc: float
    worst_case_acc: float
    mode: str
    rows: list[AttackRow]
    flags: list[SanityFlag] = field(default_factory=list)
    eps0_acc: Optional[float] = None
    zero_grad_fraction: Optional[float] = None
    #: worst case over the attacks of each threat model ('linf_eps0.15': acc); unbounded attacks excluded
    worst_case_by_threat: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def table(self) -> str:
        """A fixed-width table for the terminal (also valid Markdown)."""
        head = ["attack", "kind", "norm", "eps", "robust acc", "fooled", "mean norm", "max norm", "queries", "time s"]
        lines = [["clean", "", "", "", f"{self.clean_acc:.2%}", "", "", "", "", ""]]

        def fmt(v: Optional[float], spec: str) -> str:
            return "" if v is None else format(v, spec)

        for r in self.rows:
            lines.append([r.name, r.kind, r.norm, fmt(r.eps, ".4g"), f"{r.robust_acc:.2%}", f"{r.n_fooled}/{r.n_attacked}",
                          fmt(r.mean_norm, ".4f"), fmt(r.max_norm, ".4f"), fmt(r.mean_queries, ".0f"), f"{r.time_s:.1f}"])
        for threat, acc in self.worst_case_by_threat.items():
            norm, eps = threat.split("_eps")
            lines.append([f"worst case {threat}", "", norm, eps, f"{acc:.2%}", "", "", "", "", ""])
        lines.append(["worst case (all)", "", "", "", f"{self.worst_case_acc:.2%}", "", "", "", "", ""])
        widths = [max(len(h), *(len(row[i]) for row in lines)) for i, h in enumerate(head)]

        def render(row: list[str]) -> str:
            return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |"

        out = [f"Attack suite ({self.mode}), {self.n} examples", render(head),
               "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
        out += [render(row) for row in lines]
        out += self._extras_table()
        for f in self.flags:
            out.append(f"WARNING [{f.check}] {f.message}")
        if not self.flags:
            out.append("sanity checks: no sign of gradient masking")
        out += [f"note: {n}" for n in self.notes]
        return "\n".join(out)

    def _extras_table(self) -> list[str]:
        """The attacks' own measures (order books: table 3.2's capital and relative size), each as the mean
        over the successful attacks and, a second column, over all attacked examples."""
        rows = [r for r in self.rows if r.extras_all]
        if not rows:
            return []
        keys = list(dict.fromkeys(k for r in rows for k in r.extras_all))
        head = ["attack", "successes", *[f"{k} (successes)" for k in keys], *[f"{k} (all attempts)" for k in keys]]
        body = [[r.name, f"{r.n_fooled}/{r.n_attacked}", *[f"{r.extras.get(k, float('nan')):.4g}" for k in keys],
                 *[f"{r.extras_all.get(k, float('nan')):.4g}" for k in keys]] for r in rows]
        widths = [max(len(h), *(len(row[i]) for row in body)) for i, h in enumerate(head)]
        return ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in [head, *body]]

    def write(self, directory: str, prefix: str = "attack_suite", records: Optional[Records] = None) -> list[str]:
        """Write ``<prefix>.json``, ``<prefix>.csv`` (one row per attack) and, with
        ``records``, ``<prefix>_examples.csv`` (one row per example)."""
        os.makedirs(directory, exist_ok=True)
        paths = [os.path.join(directory, f"{prefix}.json"), os.path.join(directory, f"{prefix}.csv")]
        with open(paths[0], "w") as f:
            json.dump(self.to_dict(), f, indent=2)
        with open(paths[1], "w", newline="") as f:
            cols = list(AttackRow.__dataclass_fields__)
            w = csv.writer(f)
            w.writerow(cols)
            w.writerow(["clean", "", "", "", self.clean_acc, self.n, 0, "", "", "", "", ""])
            for r in self.rows:
                w.writerow(["" if getattr(r, c) is None else getattr(r, c) for c in cols])
            w.writerow(["worst_case", "", "", "", self.worst_case_acc, self.n, "", "", "", "", "", ""])
        if records is not None:
            path = os.path.join(directory, f"{prefix}_examples.csv")
            names = [r.name for r in self.rows]
            with open(path, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["index", "label", "clean_correct", *[f"{n}_correct" for n in names], "worst_case_correct"])
                worst = worst_case(records, [r.name for r in self.rows if r.kind != "certified"])
                for i in range(records["index"].shape[0]):
                    w.writerow([int(records["index"][i]), int(records["label"][i]), int(records["clean"][i]),
                                *[int(records[f"{n}/correct"][i]) for n in names], int(worst[i])])
            paths.append(path)
        return paths


def threat_key(attack: Attack) -> Optional[str]:
    """'linf_eps0.15' for a bounded attack, None for an unbounded one."""
    return None if attack.eps is None else f"{attack.norm}_eps{attack.eps:.6g}"


def extra_means(records: Records, label: str, mask: Tensor) -> dict[str, float]:
    """Means of attack ``label``'s own per-example measures over the examples in ``mask`` (NaN: none);
    empty when the attack ran on no example."""
    if not bool(records[f"{label}/ran"].any()):
        return {}
    prefix = f"{label}/extra/"
    return {key[len(prefix):]: float(v[mask].nanmean()) for key, v in records.items() if key.startswith(prefix)}


def worst_case(records: Records, names: list[str]) -> Tensor:
    worst = records["clean"].clone()
    for n in names:
        worst &= records[f"{n}/correct"]
    return worst


def concat_records(parts: list[Records]) -> Records:
    """Concatenate per-batch records. An attack's ``extra/`` measures exist only for batches it ran on:
    where a batch lacks one, its column is NaN there."""
    parts = [p for p in parts if p]
    if not parts:
        return {}
    keys = list(dict.fromkeys(k for p in parts for k in p))

    def column(p: Records, k: str) -> Tensor:
        if k in p:
            return p[k]
        if "/extra/" not in k:
            raise KeyError(f"records of one batch lack {k!r}")
        return torch.full((p["index"].shape[0],), float("nan"), dtype=torch.float64)

    return {k: torch.cat([column(p, k) for p in parts]) for k in keys}


def dedup_records(records: Records) -> Records:
    """Keep the first record of each example index (DistributedSampler pads with repeats)."""
    if not records:
        return records
    idx = records["index"]
    order = torch.argsort(idx, stable=True)
    sorted_idx = idx[order]
    first = torch.ones_like(sorted_idx, dtype=torch.bool)
    first[1:] = sorted_idx[1:] != sorted_idx[:-1]
    keep = order[first]
    return {k: v[keep] for k, v in records.items()}
