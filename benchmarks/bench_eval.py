#!/usr/bin/env python
"""Benchmark of the evaluation path against the references, on the same model and data.

1. PGD-20 (Linf, step eps/8, random start): ours (``PGD``) vs ``torchattacks.PGD`` with
   the same eps, step, steps and random start; seconds per 1,000 examples (medians of
   ``--repeats`` ABBA-alternated runs), the ratio ours / torchattacks, both robust accuracies.
   torchattacks is NOT a project dependency (it pins ``requests~=2.25.1``, a release with a
   published CVE): when it is not importable the script installs it for this run only with
   ``pip install --no-deps --target <scratch dir> torchattacks==3.5.1`` (a temporary folder,
   removed at exit; ``--torchattacks-dir`` keeps it) and says so.
2. AutoAttack: the suite (``AttackSuite([AutoAttack(eps)])``, batches of ``--batch-size``) vs
   the authors' ``AutoAttack(model, eps, version='standard').run_standard_evaluation`` from
   ``pyautoattack`` 0.2.0 (fra31/auto-attack's code) with the same batch size and seed: time
   ratio (wall clock, and CPU time of the process, which a shared machine's load does not inflate),
   both robust accuracies and the number of examples on which they disagree (they must
   agree: the suite runs the authors' attacks in the authors' order on the same points).

Model and data as in ``bench_attacks.py``: by default the quickstart recipe (small CNN, PGD-5
adversarial training, eps 0.15) trained here for ``--epochs`` on scikit-learn digits and
attacked on the first ``--n`` digits test images; ``--checkpoint`` for a checkpoint of this
project. Nothing is asserted; the script exits 0.

    python benchmarks/bench_eval.py --n 200                     # CPU, ~10 minutes on 2 shared cores
    python benchmarks/bench_eval.py --skip-autoattack           # PGD only, ~1 minute
    python benchmarks/bench_eval.py --device cuda --data random --arch resnet18 --image-size 32 --n 1000
"""
from __future__ import annotations

import argparse
import atexit
import importlib
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

from bench_adv_training import configure_runtime  # noqa: E402
from bench_attacks import accuracy, batched, model_and_data, timed  # noqa: E402

from lightning_adv.attacks import PGD, AttackSuite, AutoAttack  # noqa: E402

TORCHATTACKS = "torchattacks==3.5.1"


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", choices=["digits", "random"], default="digits")
    p.add_argument("--checkpoint", default=None, help="a checkpoint of this project (weights_only load)")
    p.add_argument("--arch", default="small_cnn")
    p.add_argument("--in-channels", type=int, default=None)
    p.add_argument("--image-size", type=int, default=32, help="--data random only")
    p.add_argument("--n", type=int, default=200, help="examples attacked (digits: at most 450)")
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--eps", type=float, default=0.15)
    p.add_argument("--epochs", type=int, default=5, help="PGD training epochs of the default digits model")
    p.add_argument("--repeats", type=int, default=3, help="alternating PGD runs, ours vs torchattacks")
    p.add_argument("--square-queries", type=int, default=5000, help="Square's budget on both sides (standard 5000)")
    p.add_argument("--skip-autoattack", action="store_true")
    p.add_argument("--skip-torchattacks", action="store_true")
    p.add_argument("--torchattacks-dir", default=None, help="install torchattacks here and keep it")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    args.device = torch.device(args.device)
    return args


def import_torchattacks(target: Optional[str]) -> Any:
    """torchattacks if importable, else installed without dependencies into a scratch folder."""
    try:
        return importlib.import_module("torchattacks")
    except ImportError:
        pass
    scratch = target or tempfile.mkdtemp(prefix="torchattacks_")
    if target is None:
        atexit.register(shutil.rmtree, scratch, ignore_errors=True)
    print(f"torchattacks not importable: installing {TORCHATTACKS} for this run only with "
          f"`pip install --no-deps --target {scratch}` (not a project dependency: it pins requests~=2.25.1)")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", scratch, TORCHATTACKS],
                   check=True)
    sys.path.insert(0, scratch)
    return importlib.import_module("torchattacks")


def bench_pgd(args: argparse.Namespace, model: Any, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    ta_mod = import_torchattacks(args.torchattacks_dir)
    eps, bs, per_k = args.eps, args.batch_size, 1000.0 / x.shape[0]
    ours = PGD(eps=eps, steps=20, step_size=eps / 8, random_start=True)
    theirs = ta_mod.PGD(model, eps=eps, alpha=eps / 8, steps=20, random_start=True)
    times: dict[str, list[float]] = {"ours": [], "torchattacks": []}
    accs: dict[str, list[float]] = {"ours": [], "torchattacks": []}
    for r in range(args.repeats):  # ABBA order against drift in a shared machine's load
        for which in (["ours", "torchattacks"] if r % 2 == 0 else ["torchattacks", "ours"]):
            torch.manual_seed(r)
            fn = (lambda a, b: ours.run(model, a, b).x_adv) if which == "ours" else (lambda a, b: theirs(a, b))
            t, adv = timed(lambda: batched(fn, x, y, bs), args.device)
            times[which].append(t * per_k)
            accs[which].append(accuracy(model.eval(), adv, y))  # torchattacks leaves the model in train mode
    mo, mt = statistics.median(times["ours"]), statistics.median(times["torchattacks"])
    print(f"\n(1) PGD-20, Linf eps {eps:g}, step eps/8, random start; ours vs torchattacks {ta_mod.__version__} "
          f"(median of {args.repeats}):\n"
          f"  ours         {mo:8.2f} s / 1000 examples, robust acc {statistics.mean(accs['ours']):.2%}\n"
          f"  torchattacks {mt:8.2f} s / 1000 examples, robust acc {statistics.mean(accs['torchattacks']):.2%}\n"
          f"  ratio ours / torchattacks: {mo / mt:.3f}")
    return {"pgd20_ours_s_per_1000": mo, "pgd20_torchattacks_s_per_1000": mt, "pgd20_ours_over_torchattacks": mo / mt,
            "pgd20_ours_acc": statistics.mean(accs["ours"]),
            "pgd20_torchattacks_acc": statistics.mean(accs["torchattacks"])}


def bench_autoattack(args: argparse.Namespace, model: Any, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    from pyautoattack import AutoAttack as AuthorsAutoAttack

    eps, bs, n = args.eps, args.batch_size, x.shape[0]
    suite = AttackSuite([AutoAttack(eps=eps, seed=0, square_queries=args.square_queries)], sanity_checks=False)
    c0 = time.process_time()
    t_ours, (report, records) = timed(lambda: suite.evaluate(model, x, y, batch_size=bs, warn=False), args.device)
    c_ours = time.process_time() - c0
    ours_ok = records[f"{suite.labels[0]}/correct"].to(x.device)

    def authors() -> torch.Tensor:
        model.eval()
        aa = AuthorsAutoAttack(model, eps=eps, norm="Linf", version="standard", seed=0, device=args.device)
        aa.square.n_queries = args.square_queries
        aa.verbose = False
        x_adv, _ = aa.run_standard_evaluation(x, y, batch_size=bs)  # returns (x_adv, y_adv)
        return x_adv

    c0 = time.process_time()
    t_theirs, adv = timed(authors, args.device)
    c_theirs = time.process_time() - c0
    with torch.no_grad():
        theirs_ok = model.eval()(adv).argmax(1) == y
    disagree = int((ours_ok != theirs_ok).sum())
    std = "standard" if args.square_queries == 5000 else f"Square {args.square_queries} queries (non-standard)"
    print(f"\n(2) AutoAttack ({std}), Linf eps {eps:g}, {n} examples, batch {bs}, seed 0:\n"
          f"  suite (AttackSuite + AutoAttack)      {t_ours * 1000 / n:8.2f} s / 1000 examples, "
          f"robust acc {report.rows[0].robust_acc:.2%}\n"
          f"  authors' run_standard_evaluation     {t_theirs * 1000 / n:8.2f} s / 1000 examples, "
          f"robust acc {float(theirs_ok.float().mean()):.2%}\n"
          f"  ratio suite / authors: {t_ours / t_theirs:.3f} wall, {c_ours / c_theirs:.3f} CPU time of this process "
          f"({c_ours:.1f} s / {c_theirs:.1f} s); examples on which they disagree: {disagree} of {n}")
    return {"autoattack_suite_s_per_1000": t_ours * 1000 / n, "autoattack_authors_s_per_1000": t_theirs * 1000 / n,
            "autoattack_suite_over_authors": t_ours / t_theirs, "autoattack_suite_over_authors_cpu": c_ours / c_theirs,
            "autoattack_suite_acc": report.rows[0].robust_acc,
            "autoattack_authors_acc": float(theirs_ok.float().mean()), "autoattack_disagreements": disagree}


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    configure_runtime(args)
    model, x, y, what = model_and_data(args)
    model.eval()
    print(f"torch {torch.__version__} | device {args.device} | threads {args.threads}\nmodel: {what}\n"
          f"{x.shape[0]} examples, clean accuracy {accuracy(model, x, y):.2%}")
    results: dict[str, float] = {}
    if not args.skip_torchattacks:
        results.update(bench_pgd(args, model, x, y))
    if not args.skip_autoattack:
        results.update(bench_autoattack(args, model, x, y))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
