#!/usr/bin/env python
"""Benchmark: the LOBSTER data pipeline of chapter 3 (issue 14, data half).

Prints, for simulated days (or your own LOBSTER files with ``--data-dir``):

(a) simulation: messages generated per second and seconds per simulated day (incl. writing);
(b) parsing: rows/s of ``read_messages`` / ``read_orderbook`` and the ratio of their time to a
    plain ``np.loadtxt`` of the same file (the validation overhead);
(c) grid sampling: seconds per day to build the 0.01 s grid (``build_day_grid``);
(e) with ``--predictability N``: held-out accuracy of a logistic regression on the last 10-level
    depth imbalance (5 simulated days of 8 minutes, 3 train / 2 held-out, 30 s inputs, 10 s
    horizon) for seeds 0..N-1, with the default ``signal_strength`` and with 0;
(d) snippets: labelled snippets/s of the training pipeline (``SnippetDataset.__getitems__`` +
    ``collate_labelled_snippets``, as the DataLoader calls them: random draws, one gather per array
    into the batch, executions, labels), and the ratio against just slicing the same windows out of a preloaded dense
    (G, 4L) numpy array and stacking them into a tensor (a lower bound for any pipeline).

It never asserts on timings.

Examples::

    python benchmarks/bench_orderbook_data.py                       # 2 simulated first hours, 10 levels
    python benchmarks/bench_orderbook_data.py --minutes 10 --batches 5
    python benchmarks/bench_orderbook_data.py --data-dir ~/lobster/F --ticker F
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from lightning_adv.datamodules.lobster import SnippetDataset, collate_labelled_snippets  # noqa: E402
from lightning_adv.orderbook.lobster import find_lobster_days, read_messages, read_orderbook  # noqa: E402
from lightning_adv.orderbook.simulator import SimulatorConfig, write_simulated_days  # noqa: E402
from lightning_adv.orderbook.snippets import build_day_grid, pooled_threshold  # noqa: E402


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=None, help="your LOBSTER files (default: simulate into a temp dir)")
    p.add_argument("--ticker", default=None)
    p.add_argument("--days", type=int, default=2, help="simulated days")
    p.add_argument("--minutes", type=float, default=60.0, help="simulated minutes per day (from 9:30)")
    p.add_argument("--levels", type=int, default=10)
    p.add_argument("--snippet-seconds", type=float, default=60.0)
    p.add_argument("--horizon-seconds", type=float, default=10.0)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--batches", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--predictability", type=int, default=0, metavar="SEEDS")
    return p.parse_args(argv)


def timed(fn, *args):
    t = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t


def held_out_accuracy(seed: int, strength: float) -> float:
    """(e): logistic regression on the last depth imbalance, trained on 3 days, scored on 2."""
    from sklearn.linear_model import LogisticRegression

    from lightning_adv.orderbook.simulator import simulate_day
    from lightning_adv.orderbook.snippets import label_changes, labels_from_changes, symmetric_threshold

    cfg = SimulatorConfig(end_ms=34_200_000 + 8 * 60_000, seed=seed, warmup_seconds=60, signal_strength=strength)
    days = [build_day_grid(str(d), *simulate_day(cfg, d), cfg.start_ms * 10**6, cfg.end_ms * 10**6, 10**7)
            for d in range(5)]

    def features(day):
        starts, changes = label_changes(day, 3000, 1000)
        rows = day.index[starts[::25] + 2999]
        ask, bid = day.ask_size[rows].sum(1), day.bid_size[rows].sum(1)
        return ((bid - ask) / (bid + ask))[:, None], changes[::25]

    (x_tr, c_tr), (x_te, c_te) = ([np.concatenate(v) for v in zip(*map(features, part))] for part in (days[:3], days[3:]))
    theta = symmetric_threshold(c_tr, 1 / 3)
    clf = LogisticRegression().fit(x_tr, labels_from_changes(c_tr, theta))
    return float(clf.score(x_te, labels_from_changes(c_te, theta)))


def main(argv: Optional[list[str]] = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    tmp = None
    if args.data_dir is None:
        tmp = tempfile.TemporaryDirectory()
        cfg = SimulatorConfig(days=args.days, end_ms=34_200_000 + int(args.minutes * 60_000), levels=args.levels)
        _, sim_s = timed(write_simulated_days, tmp.name, cfg)
        data_dir = tmp.name
    else:
        data_dir, sim_s = args.data_dir, None
    days = find_lobster_days(data_dir, args.ticker)
    rows = msg_s = book_s = ref_s = grid_s = 0.0
    grids = []
    for day in days:
        msgs, t_m = timed(read_messages, day.message_path)
        book, t_b = timed(read_orderbook, day.orderbook_path, args.levels)
        _, t_ref_m = timed(lambda: np.loadtxt(day.message_path, dtype=np.float64, delimiter=","))
        _, t_ref_b = timed(lambda: np.loadtxt(day.orderbook_path, dtype=np.int64, delimiter=","))
        window = (max(day.start_ms, 34_200_000) * 1_000_000, day.end_ms * 1_000_000)
        grid, t_g = timed(build_day_grid, day.date, msgs, book, *window, 10_000_000)
        grids.append(grid)
        rows, msg_s, book_s, ref_s, grid_s = rows + len(msgs), msg_s + t_m, book_s + t_b, ref_s + t_ref_m + t_ref_b, grid_s + t_g
    n = len(days)
    print(f"days: {n} from {data_dir}, {rows / n:.0f} messages/day, {args.levels} levels")
    if sim_s is not None:
        print(f"(a) simulation + writing: {sim_s / n:.2f} s/day, {rows / sim_s:,.0f} messages/s")
    print(f"(b) parse: messages {rows / msg_s:,.0f} rows/s, order book {rows / book_s:,.0f} rows/s; "
          f"time / plain np.loadtxt = {(msg_s + book_s) / ref_s:.2f}")
    print(f"(c) grid sampling: {grid_s / n:.2f} s/day ({grids[0].steps} steps, {len(grids[0].ask_size)} distinct rows)")
    steps = int(round(args.snippet_seconds * 100))
    horizon = int(round(args.horizon_seconds * 100))
    theta, _ = pooled_threshold(grids, steps, horizon, 1 / 3)
    count = args.batch_size * args.batches
    ds = SnippetDataset(grids, steps, horizon, args.levels, theta, count, 0, 0, fixed=False)
    t = time.perf_counter()
    for b in range(args.batches):
        collate_labelled_snippets(ds.__getitems__(list(range(b * args.batch_size, (b + 1) * args.batch_size))))
    pipe_s = time.perf_counter() - t
    dense = [np.concatenate([g.ask_price[g.index], g.ask_size[g.index], g.bid_price[g.index], g.bid_size[g.index]],
                            1).astype(np.float64) for g in grids]
    draws = [ds._draw(k) for k in range(count)]
    t = time.perf_counter()
    for b in range(args.batches):
        part = draws[b * args.batch_size:(b + 1) * args.batch_size]
        torch.from_numpy(np.stack([dense[d][int(ds.starts[d][p]):int(ds.starts[d][p]) + steps] for d, p in part]))
    ref = time.perf_counter() - t
    print(f"(d) snippets (T={steps}, L={args.levels}, batch {args.batch_size}): {count / pipe_s:,.0f} snippets/s; "
          f"dense-slice reference {count / ref:,.0f} snippets/s; pipeline time / reference = {pipe_s / ref:.2f}")
    if tmp is not None:
        tmp.cleanup()
    for strength in (SimulatorConfig.signal_strength, 0.0) if args.predictability else ():
        accs = [held_out_accuracy(seed, strength) for seed in range(args.predictability)]
        print(f"(e) signal_strength={strength}: held-out accuracy mean {np.mean(accs):.3f}, "
              f"min {min(accs):.3f}, max {max(accs):.3f} over {len(accs)} seeds")


if __name__ == "__main__":
    main()
