#!/usr/bin/env python
"""Draw the certified-accuracy-vs-L2-radius curves of several randomized-smoothing runs together.

Each input is a ``smoothing_curve.json`` written by :class:`lightning_adv.callbacks.SmoothingCertification`
(one per sigma). Writes ``OUT.csv`` (one row per radius of ``--radii``, one column per sigma, and the
envelope: the best sigma at each radius), ``OUT.json`` (the same plus each run's settings) and ``OUT.png``
(all curves), and prints the table.

    python scripts/smoothing_curve.py runs/smoothing_mnist_sigma*/version_0/smoothing_curve.json \\
        --out runs/smoothing_mnist_curve
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def accuracy_at(run: dict, radius: float) -> float:
    """Certified accuracy of ``run`` at ``radius``: the fraction of examples correct with a radius >= it."""
    ex = run["per_example"]
    ok = [p == y and r >= radius for p, y, r in zip(ex["prediction"], ex["label"], ex["radius"])]
    return sum(ok) / len(ok)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="smoothing_curve.json files")
    p.add_argument("--out", required=True, help="output path without extension")
    p.add_argument("--radii", type=float, nargs="+", default=[0.0, 0.5, 1.0, 1.5, 2.0])
    args = p.parse_args(argv)
    runs = sorted((json.loads(Path(f).read_text()) for f in args.runs), key=lambda r: r["sigma"])
    for f, run in zip(args.runs, runs):
        if run.get("method") != "randomized_smoothing":
            sys.exit(f"smoothing_curve: {f} is not a smoothing_curve.json (method={run.get('method')!r})")
    cols = [f"sigma_{r['sigma']:g}" for r in runs]
    table = [{"radius": rad, **{c: accuracy_at(r, rad) for c, r in zip(cols, runs)}} for rad in args.radii]
    for row in table:
        row["best"] = max(row[c] for c in cols)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_suffix(".csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["radius", *cols, "best"])
        w.writeheader()
        w.writerows(table)
    settings = [{k: r[k] for k in ("sigma", "n0", "n", "alpha", "examples", "abstain", "checkpoint")} for r in runs]
    out.with_suffix(".json").write_text(json.dumps({"runs": settings, "table": table}, indent=2))
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for c, r in zip(cols, runs):
        ax.plot(r["radii"], r["certified_acc"], drawstyle="steps-post", label=c.replace("_", " = "))
    ax.set(xlabel="L2 radius", ylabel="certified accuracy", ylim=(0, 1),
           title=f"randomized smoothing, N = {runs[0]['n']}, {runs[0]['examples']} examples")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=120)
    print("radius  " + "  ".join(f"{c:>11s}" for c in [*cols, "best"]))
    for row in table:
        print(f"{row['radius']:6.2f}  " + "  ".join(f"{row[c]:11.1%}" for c in [*cols, "best"]))
    print(f"written {out}.csv, {out}.json, {out}.png")


if __name__ == "__main__":
    main()
