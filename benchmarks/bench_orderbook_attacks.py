#!/usr/bin/env python
"""Benchmark: order-book attack throughput and how the propagation scales with executions.

1. Snippets per second of the capital-bounded gradient attack (``--steps`` ascent steps, the
   propagation included; the routing is computed once per batch) on an MLP valuation model
   with random weights (the attack runs every step: nothing stops early), and of the
   propagation alone (routing + one propagate) for comparison.
2. The propagation's time per snippet as the number of executions per snippet grows
   (toy snippets with an execution probability per grid step from 0 to 1), printed with the
   ratio to the execution-free case: the routing is O(n log n + n log E), so the ratio should
   stay near 1.

    python benchmarks/bench_orderbook_attacks.py                      # CPU, ~1 minute, T = 600, L = 10
    python benchmarks/bench_orderbook_attacks.py --steps-t 6000 --device cuda   # the thesis' T
Nothing is asserted; the script exits 0.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lightning_adv.orderbook import CapitalBoundedAttack, create_valuation_model, propagate, routing  # noqa: E402
from lightning_adv.orderbook.toy import toy_snippets  # noqa: E402


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: str, repeats: int = 3) -> float:
    fn()
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=32, help="snippets per batch")
    p.add_argument("--steps-t", type=int, default=600, help="snapshots per snippet T")
    p.add_argument("--levels", type=int, default=10)
    p.add_argument("--steps", type=int, default=20, help="gradient attack steps")
    p.add_argument("--width", type=int, default=256, help="MLP width (thesis 8000)")
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    torch.manual_seed(0)
    x, y = toy_snippets(a.n, steps=a.steps_t, levels=a.levels, exec_prob=0.05, seed=0)
    x, y = x.to(a.device), y.to(a.device)
    model = create_valuation_model("mlp", steps=a.steps_t, width=a.width, depth=4).to(a.device).eval()
    attack = CapitalBoundedAttack(capital=1e12, alpha0=1.0, steps=a.steps, levels=a.levels)
    t_attack = timed(lambda: attack.run(model, x, y), a.device, repeats=1)
    delta = torch.rand(a.n, a.steps_t, 2, a.levels, device=a.device).round()
    t_prop = timed(lambda: propagate(x, delta, routing(x)), a.device)
    print(f"B={a.n} T={a.steps_t} L={a.levels} device={a.device} torch {torch.__version__}")
    print(f"gradient attack, {a.steps} steps: {a.n / t_attack:.1f} snippets/s "
          f"({t_attack / a.n / a.steps * 1e3:.2f} ms per snippet-step)")
    print(f"propagation (routing + propagate): {a.n / t_prop:.1f} snippets/s")
    print("\nexecutions per snippet -> propagation ms per snippet (ratio to no executions)")
    base = None
    for prob in (0.0, 0.01, 0.1, 0.5, 1.0):
        xs, _ = toy_snippets(a.n, steps=a.steps_t, levels=a.levels, move_prob=0.0 if prob == 0 else 0.3,
                             exec_prob=prob, seed=1)
        xs = xs.to(a.device)
        e = float((xs.exec_side != 0).sum(1).float().mean())
        t = timed(lambda: propagate(xs, delta, routing(xs)), a.device) / a.n * 1e3
        base = t if base is None else base
        print(f"  {e:8.1f} executions: {t:7.3f} ms  (x{t / base:.2f})")


if __name__ == "__main__":
    main()
