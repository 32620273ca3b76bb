#!/usr/bin/env python
"""Benchmark: certified examples per second of IBP, CROWN-IBP and full CROWN on the same model,
the ratio CROWN / IBP, and how full CROWN's cost grows with the width.

Model: small_cnn with random weights (full CROWN's cost depends on how many neurons are unstable:
on random weights nearly all are, the worst case) on 1x8x8 inputs (digits) by default, Linf eps ``--eps``. For each width of
``--widths``: seconds
per example of each method and the examples per second; full CROWN back-substitutes one row per
unstable neuron, so its cost grows about with width^2 (neurons x the width of every layer walked).

Then, when auto_LiRPA is importable, the ratio of our time to auto_LiRPA's per method (IBP, CROWN-IBP,
full CROWN; Linf, and L2 for full CROWN) on Gowal et al.'s small and medium CNNs (1x28x28, random
weights) and how much looser ours is (``benchmarks/_lirpa_compare.py``); otherwise it says why not.
auto_LiRPA's PyPI release pins torch<2.9; its current source runs on this project's torch through
PYTHONPATH with two small pure-Python packages beside it (docs/certified.md):

    git clone https://github.com/Verified-Intelligence/auto_LiRPA /tmp/lirpa
    pip install --target /tmp/lirpa-deps appdirs graphviz      # not into the project's venv
    PYTHONPATH=/tmp/lirpa:/tmp/lirpa-deps python benchmarks/bench_certify.py

Nothing is asserted; the script exits 0.

    python benchmarks/bench_certify.py                        # CPU, a few minutes on 2 shared cores
    python benchmarks/bench_certify.py --device cuda --image-size 28 --widths 8 16 32 --n 256
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lightning_adv.certify import BoundNetwork, margin_lower_bound  # noqa: E402
from lightning_adv.models import create_model  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _lirpa_compare import compare, lirpa_status  # noqa: E402


def _time(fn, repeats: int, device: str) -> float:
    """Best of ``repeats``: wall seconds on a GPU, CPU seconds of the process on a CPU (a shared machine's load
    stretches wall time, not the work done)."""
    clock = time.perf_counter if device.startswith("cuda") else time.process_time
    fn()  # warm-up (builds the op chain)
    best = float("inf")
    for _ in range(repeats):
        t0 = clock()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, clock() - t0)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--widths", type=int, nargs="+", default=[2, 4, 8])
    p.add_argument("--image-size", type=int, default=8)
    p.add_argument("--n", type=int, default=32, help="examples per timed call")
    p.add_argument("--eps", type=float, default=0.05)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", default=None)
    p.add_argument("--lirpa-n", type=int, default=4, help="examples per timed call of the auto_LiRPA comparison")
    p.add_argument("--lirpa-eps", type=float, default=0.02, help="Linf eps of the comparison")
    p.add_argument("--lirpa-eps-l2", type=float, default=0.3, help="L2 eps of the comparison")
    p.add_argument("--lirpa-nets", nargs="*", default=["small", "medium"], choices=["small", "medium"],
                   help="nets of the comparison (none: skip it)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = (torch.rand(args.n, 1, args.image_size, args.image_size, device=args.device) * 0.5 + 0.25)
    rows = []
    for w in args.widths:
        model = create_model("small_cnn", in_channels=1, width=w).to(args.device).eval()
        net = BoundNetwork(model)
        y = model(x).argmax(1)
        row = {"width": w}
        with torch.no_grad():
            for method in ("ibp", "crown-ibp", "crown"):
                s = _time(lambda: margin_lower_bound(net, x, y, args.eps, method), args.repeats, args.device)
                row[f"{method}_examples_per_s"] = args.n / s
        row["crown_over_ibp_time"] = row["ibp_examples_per_s"] / row["crown_examples_per_s"]
        rows.append(row)
        print(f"width {w:3d}: IBP {row['ibp_examples_per_s']:9.1f} ex/s, CROWN-IBP {row['crown-ibp_examples_per_s']:8.1f}"
              f" ex/s, CROWN {row['crown_examples_per_s']:7.2f} ex/s, CROWN/IBP time x{row['crown_over_ibp_time']:.0f}")
    for a, b in zip(rows, rows[1:]):
        growth = a["crown_examples_per_s"] / b["crown_examples_per_s"]
        print(f"CROWN cost width {a['width']} -> {b['width']}: x{growth:.1f}")
    lirpa, why = lirpa_status()
    print(f"comparison with auto_LiRPA: {why}")
    lirpa_rows = compare(lirpa, args.lirpa_n, args.lirpa_eps, args.lirpa_eps_l2, args.repeats, args.device,
                         tuple(args.lirpa_nets)) if lirpa is not None and args.lirpa_nets else []
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows, "auto_lirpa": why,
                                               "lirpa_rows": lirpa_rows}, indent=2))


if __name__ == "__main__":
    main()
