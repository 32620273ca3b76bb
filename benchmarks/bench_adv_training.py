#!/usr/bin/env python
"""Benchmark: PGD-10 adversarial training through Lightning vs a plain PyTorch loop.

One run measures, on the same model, batch and PGD settings:

(a) time per ``AdvTraining(method="pgd")`` step run by the Lightning ``Trainer``
    divided by time per step of a plain PyTorch loop written here that does the same
    work (target: ratio <= 1.05);
(b) time per PGD-K adversarial-training step divided by time per natural training
    step (forward + backward + SGD step), both through the Trainer (``AdvTraining`` vs
    ``Classifier``) and both plain (target: ratio <= 1.1 * (1 + 2K/3)).

The plain loop does exactly the work of ``AdvTraining.training_step`` + Lightning's
automatic optimisation: a random start in the Linf ball, K steps of
``torch.autograd.grad`` w.r.t. the perturbation with the model in train mode (sign
step, projection, clamp to [0, 1]), the forward at ``x_adv``, cross-entropy, the extra
no-grad eval-mode forward on the clean batch when ``track_clean_acc`` (the same switch
is used on both sides: ``--no-clean-acc`` turns it off for both), ``zero_grad``,
backward, ``SGD.step``. What it does *not* do is the module's bookkeeping (torchmetrics
updates, ``self.log``, the ``lr`` lookup) and Lightning's loop machinery: that is the
overhead being measured.

Timing: a fixed in-memory data set on the device (a ``TensorDataset`` of pre-made
batches, ``DataLoader(batch_size=None)``; both sides iterate the same loader). Each run
trains ``warmup + steps + 1`` batches; the clock is read (after a device synchronise)
at the start of batch ``warmup`` and at the start of batch ``warmup + steps``, so the
window holds ``steps`` full loop periods (data fetch, step, hooks) and excludes Trainer
set-up / tear-down and warm-up. Runs are repeated in ABBA order (Trainer, plain, plain,
Trainer, ...) and medians are reported. On CPU every step is also time-stamped and the
median per-step time is reported (robust to bursts of load from other processes).

Examples::

    python benchmarks/bench_adv_training.py                      # CPU: small_cnn 1x28x28, batch 32
    python benchmarks/bench_adv_training.py --device cuda --bf16 --channels-last
    python benchmarks/bench_adv_training.py --arch resnet18 --batch-size 32 --steps 4 --repeats 3
    python benchmarks/bench_adv_training.py --profile cprofile    # also profile one Trainer AT run

This is a benchmark, not a test: it never asserts on timings and exits 0 when a target
is missed.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import cProfile
import io
import json
import logging
import os
import platform
import pstats
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

# Run from a checkout without installing the package.
_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

import lightning  # noqa: E402
import lightning.pytorch as pl  # noqa: E402
from lightning.pytorch.callbacks import Callback  # noqa: E402

from lightning_adv.attacks import PGD  # noqa: E402
from lightning_adv.modules.adv_training import AdvTraining  # noqa: E402
from lightning_adv.modules.classifier import Classifier  # noqa: E402
from lightning_adv.modules.optim import OptimConfig  # noqa: E402

GREY_ARCHS = ("small_cnn", "mlp")
RATIO_A_TARGET = 1.05


# --------------------------------------------------------------------------- options
def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="PGD-K adversarial training: Lightning Trainer vs plain PyTorch, and AT vs natural cost.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--arch", default=None,
                   help="registered model name; default resnet18 on CUDA, small_cnn on CPU")
    p.add_argument("--image-size", type=int, default=None, help="default 32 (3-channel archs) / 28 (small_cnn, mlp)")
    p.add_argument("--in-channels", type=int, default=None, help="default 3, or 1 for small_cnn / mlp")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--arch-kwargs", type=json.loads, default=None, help='JSON, e.g. \'{"width": 16}\'')
    p.add_argument("--batch-size", type=int, default=None, help="default 128 on CUDA, 32 on CPU")
    p.add_argument("--steps", type=int, default=None, help="timed steps per run; default 50 on CUDA, 8 on CPU")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps per run; default 10 on CUDA, 2 on CPU")
    p.add_argument("--repeats", type=int, default=None, help="runs per configuration; default 5")
    p.add_argument("--pgd-steps", type=int, default=10, help="K, the attack steps")
    p.add_argument("--eps", type=float, default=8 / 255)
    p.add_argument("--step-size", type=float, default=2 / 255)
    p.add_argument("--no-clean-acc", action="store_true",
                   help="track_clean_acc=False (and no clean eval forward in the plain loop)")
    p.add_argument("--skip-natural", action="store_true", help="skip the natural-training runs (no ratio b)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--bf16", action="store_true",
                   help='bf16 autocast: Trainer precision="bf16-mixed", torch.autocast on the plain side')
    p.add_argument("--channels-last", action="store_true", help="model and inputs in channels_last on both sides")
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads for both sides; default 1 on CPU (least noisy on a shared "
                        "machine), unchanged on CUDA")
    p.add_argument("--no-cudnn-benchmark", action="store_true", help="cudnn.benchmark=False on both sides")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--profile", choices=("none", "cprofile", "torch"), default="none",
                   help="after timing, profile one Trainer AT run and one plain AT run and print the top entries")
    p.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    return p.parse_args(argv)


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    dev = args.device
    if dev == "auto":
        dev = "cuda" if torch.cuda.is_available() else "cpu"
    args.device = torch.device(dev)
    if args.device.type == "cuda" and args.device.index is None:
        args.device = torch.device("cuda", torch.cuda.current_device())
    cuda = args.device.type == "cuda"
    if args.arch is None:
        args.arch = "resnet18" if cuda else "small_cnn"
    grey = args.arch in GREY_ARCHS
    if args.in_channels is None:
        args.in_channels = 1 if grey else 3
    if args.image_size is None:
        args.image_size = 28 if grey else 32
    if args.batch_size is None:
        args.batch_size = 128 if cuda else 32
    if args.steps is None:
        args.steps = 50 if cuda else 8
    if args.warmup is None:
        args.warmup = 10 if cuda else 2
    if args.repeats is None:
        args.repeats = 5
    if args.threads is None:
        args.threads = torch.get_num_threads() if cuda else 1
    if args.steps < 1 or args.warmup < 0 or args.repeats < 1 or args.pgd_steps < 0:
        raise SystemExit("--steps and --repeats must be >= 1, --warmup and --pgd-steps >= 0")
    arch_kwargs = dict(args.arch_kwargs or {})
    if args.arch == "mlp":
        arch_kwargs.setdefault("input_size", args.image_size)
    args.arch_kwargs = arch_kwargs or None
    args.track_clean_acc = not args.no_clean_acc
    args.cudnn_benchmark = not args.no_cudnn_benchmark
    return args


# --------------------------------------------------------------------------- helpers
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_loader(args: argparse.Namespace) -> DataLoader:
    """Pre-made batches on the device; ``DataLoader(batch_size=None)`` yields them as is."""
    nb = args.warmup + args.steps + 1
    g = torch.Generator().manual_seed(args.seed)
    c, s, b = args.in_channels, args.image_size, args.batch_size
    # (nb, B, H, W, C) permuted: every batch x[i] is contiguous in channels_last; otherwise NCHW.
    if args.channels_last:
        x = torch.rand(nb, b, s, s, c, generator=g).permute(0, 1, 4, 2, 3)
    else:
        x = torch.rand(nb, b, c, s, s, generator=g)
    y = torch.randint(0, args.num_classes, (nb, b), generator=g)
    x, y = x.to(args.device), y.to(args.device)
    return DataLoader(TensorDataset(x, y), batch_size=None, shuffle=False, num_workers=0)


def optim_cfg() -> OptimConfig:
    # the thesis recipe (SGD 0.1, momentum 0.9, wd 2e-4); the schedule steps per epoch, outside the window
    return OptimConfig()


def make_sgd(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                           weight_decay=cfg.weight_decay, nesterov=cfg.nesterov)


def make_module(args: argparse.Namespace, kind: str) -> pl.LightningModule:
    common = dict(arch=args.arch, num_classes=args.num_classes, in_channels=args.in_channels,
                  arch_kwargs=args.arch_kwargs, optim=optim_cfg())
    torch.manual_seed(args.seed)
    if kind == "at":
        attack = PGD(eps=args.eps, steps=args.pgd_steps, step_size=args.step_size, norm="linf",
                     random_start=True, restarts=1, bn_mode="train", loss="ce")
        module: pl.LightningModule = AdvTraining(method="pgd", attack=attack,
                                                 track_clean_acc=args.track_clean_acc, **common)
    else:
        module = Classifier(**common)
    if args.channels_last:
        module.model.to(memory_format=torch.channels_last)
    return module


class WindowTimer(Callback):
    """Clock at the start of batch ``start`` and ``end`` (after a device sync); per-step stamps on CPU."""

    def __init__(self, start: int, end: int, device: torch.device) -> None:
        self.start, self.end, self.device = start, end, device
        self.t0 = self.t1 = (float("nan"), float("nan"))
        self.stamps: list[tuple[float, float]] = []
        self.threads = -1

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.threads = torch.get_num_threads()

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if batch_idx == self.start or batch_idx == self.end:
            sync(self.device)
        t = (time.perf_counter(), time.process_time())
        if self.start <= batch_idx <= self.end:
            self.stamps.append(t)
        if batch_idx == self.start:
            self.t0 = t
        elif batch_idx == self.end:
            self.t1 = t


def run_trainer(args: argparse.Namespace, kind: str, loader: DataLoader,
                profiler: Optional[Callable[[], Any]] = None) -> dict:
    module = make_module(args, kind)
    timer = WindowTimer(args.warmup, args.warmup + args.steps, args.device)
    cuda = args.device.type == "cuda"
    trainer = pl.Trainer(
        accelerator="gpu" if cuda else "cpu",
        devices=[args.device.index] if cuda else 1,
        precision="bf16-mixed" if args.bf16 else "32-true",
        max_steps=args.warmup + args.steps + 1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        benchmark=args.cudnn_benchmark if cuda else None,
        callbacks=[timer],
    )
    ctx = profiler() if profiler is not None else contextlib.nullcontext()
    torch.manual_seed(args.seed + 1)
    with ctx as prof:
        trainer.fit(module, train_dataloaders=loader)
    if timer.threads != args.threads:
        print(f"WARNING: torch threads inside the Trainer = {timer.threads}, expected {args.threads}",
              file=sys.stderr)
    out = _summary(timer.t0, timer.t1, timer.stamps, args)
    out["prof"] = prof
    return out


def _summary(t0: tuple[float, float], t1: tuple[float, float], stamps: list[tuple[float, float]],
             args: argparse.Namespace) -> dict:
    """Wall-clock mean over the window; on CPU also per-step wall times and the process CPU time."""
    cpu = args.device.type == "cpu"
    return {
        "mean_s": (t1[0] - t0[0]) / args.steps,
        "cpu_mean_s": (t1[1] - t0[1]) / args.steps if cpu else None,
        "step_s": [b[0] - a[0] for a, b in zip(stamps, stamps[1:])] if cpu else [],
    }


def plain_at_step(model: nn.Module, opt: torch.optim.Optimizer, x: Tensor, y: Tensor,
                  args: argparse.Namespace) -> None:
    """``AdvTraining.training_step`` (method pgd, loss ce) + Lightning's automatic optimisation."""
    eps, alpha = args.eps, args.step_size
    opt.zero_grad(set_to_none=True)
    with torch.autocast(args.device.type, dtype=torch.bfloat16, enabled=args.bf16):
        model.train()  # bn_mode="train" (the model already is in train mode)
        delta = torch.empty_like(x).uniform_(-eps, eps).clamp(-eps, eps)
        delta = (x + delta).clamp_(0.0, 1.0) - x
        for _ in range(args.pgd_steps):
            delta.requires_grad_(True)
            loss = F.cross_entropy(model(x + delta).float(), y, reduction="none")
            (grad,) = torch.autograd.grad(loss.sum(), delta)
            delta = (delta.detach() + alpha * grad.sign()).clamp(-eps, eps)
            delta = (x + delta).clamp_(0.0, 1.0) - x
        x_adv = (x + delta).detach()
        logits_adv = model(x_adv)
        loss = F.cross_entropy(logits_adv, y)
        if args.track_clean_acc:
            with torch.no_grad():
                model.eval()
                model(x)
                model.train()
    loss.backward()
    opt.step()


def plain_nat_step(model: nn.Module, opt: torch.optim.Optimizer, x: Tensor, y: Tensor,
                   args: argparse.Namespace) -> None:
    opt.zero_grad(set_to_none=True)
    with torch.autocast(args.device.type, dtype=torch.bfloat16, enabled=args.bf16):
        loss = F.cross_entropy(model(x), y)
    loss.backward()
    opt.step()


def run_plain(args: argparse.Namespace, kind: str, loader: DataLoader,
              profiler: Optional[Callable[[], Any]] = None) -> dict:
    model = make_module(args, kind).model.to(args.device)  # same init as the Trainer side
    model.train()
    opt = make_sgd(model, optim_cfg())
    step = plain_at_step if kind == "at" else plain_nat_step
    start, end = args.warmup, args.warmup + args.steps
    t0 = t1 = (float("nan"), float("nan"))
    stamps: list[tuple[float, float]] = []
    ctx = profiler() if profiler is not None else contextlib.nullcontext()
    torch.manual_seed(args.seed + 1)
    with ctx as prof:
        for i, (x, y) in enumerate(loader):
            x = x.to(args.device, non_blocking=True)
            y = y.to(args.device, non_blocking=True)
            if i == start or i == end:
                sync(args.device)
            t = (time.perf_counter(), time.process_time())
            if start <= i <= end:
                stamps.append(t)
            if i == start:
                t0 = t
            elif i == end:
                t1 = t
            step(model, opt, x, y, args)
    out = _summary(t0, t1, stamps, args)
    out["prof"] = prof
    return out


# --------------------------------------------------------------------------- profiling
def profile_runs(args: argparse.Namespace, loader: DataLoader) -> None:
    print(f"\n=== profile ({args.profile}) of one AT run per side ===")
    for side, fn in (("Trainer", run_trainer), ("plain", run_plain)):
        if args.profile == "cprofile":
            res = fn(args, "at", loader, profiler=cProfile.Profile)
            s = io.StringIO()
            st = pstats.Stats(res["prof"], stream=s)
            st.sort_stats("tottime").print_stats(25)
            print(f"\n--- cProfile, {side} AT run (sorted by tottime, top 25) ---")
            print(s.getvalue())
        else:
            from torch.profiler import ProfilerActivity, profile

            acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device.type == "cuda" else [])
            res = fn(args, "at", loader, profiler=lambda: profile(activities=acts))
            print(f"\n--- torch.profiler, {side} AT run (top 25 by self CPU time) ---")
            print(res["prof"].key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


# --------------------------------------------------------------------------- main
def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def main(argv: Optional[list[str]] = None) -> int:
    args = resolve(parse_args(argv))
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("lightning.fabric").setLevel(logging.ERROR)
    torch.set_num_threads(args.threads)
    if args.device.type == "cuda":
        torch.cuda.set_device(args.device)
        torch.backends.cudnn.benchmark = args.cudnn_benchmark
    if args.bf16 and args.device.type != "cuda":
        print("note: --bf16 on CPU uses CPU autocast; the option is meant for GPUs", file=sys.stderr)

    K = args.pgd_steps
    target_b = 1.1 * (1 + 2 * K / 3)
    prec = "bf16-mixed" if args.bf16 else "fp32"
    dev_name = torch.cuda.get_device_name(args.device) if args.device.type == "cuda" else (
        platform.processor() or platform.machine())
    header = (f"torch {torch.__version__} | lightning {lightning.__version__} | python {platform.python_version()}\n"
              f"device {args.device} ({dev_name}), torch threads {args.threads}, "
              f"cudnn.benchmark {args.cudnn_benchmark if args.device.type == 'cuda' else 'n/a'}\n"
              f"arch {args.arch} {args.in_channels}x{args.image_size}x{args.image_size}"
              f"{' ' + json.dumps(args.arch_kwargs) if args.arch_kwargs else ''}, batch {args.batch_size}, "
              f"precision {prec}, channels_last {args.channels_last}\n"
              f"PGD-{K} Linf eps {args.eps * 255:g}/255 step {args.step_size * 255:g}/255 random start, "
              f"bn_mode train, track_clean_acc {args.track_clean_acc} (both sides)\n"
              f"{args.steps} timed + {args.warmup} warm-up steps per run, {args.repeats} repeats, ABBA order")
    print(header, flush=True)

    loader = make_loader(args)
    kinds = ["at"] if args.skip_natural else ["at", "nat"]
    runs: dict[str, list[dict]] = {f"{k}_{s}": [] for k in kinds for s in ("trainer", "plain")}
    t_start = time.perf_counter()
    for r in range(args.repeats):
        order = ("trainer", "plain") if r % 2 == 0 else ("plain", "trainer")
        for kind in kinds:
            for side in order:
                fn = run_trainer if side == "trainer" else run_plain
                res = fn(args, kind, loader)
                res.pop("prof", None)
                runs[f"{kind}_{side}"].append(res)
                cpu_txt = f", {res['cpu_mean_s'] * 1e3:9.2f} ms CPU" if res["cpu_mean_s"] is not None else ""
                print(f"  repeat {r + 1}/{args.repeats} {kind:>3} {side:<7} "
                      f"{res['mean_s'] * 1e3:9.2f} ms/step wall{cpu_txt}", flush=True)
    elapsed = time.perf_counter() - t_start

    cpu = args.device.type == "cpu"
    stats: dict[str, dict] = {}
    for key, rs in runs.items():
        means = [x["mean_s"] for x in rs]
        steps = [s for x in rs for s in x["step_s"]]
        m = median(means)
        stats[key] = {
            "median_s": m,
            "runs_s": means,
            "median_step_s": median(steps) if steps else None,
            "cpu_median_s": median([x["cpu_mean_s"] for x in rs]) if cpu else None,
            "cpu_runs_s": [x["cpu_mean_s"] for x in rs] if cpu else None,
            "images_per_s": args.batch_size / m,
        }

    def ratio(a: str, b: str) -> dict:
        ra, rb = runs[a], runs[b]
        paired = [x["mean_s"] / y["mean_s"] for x, y in zip(ra, rb)]
        out = {"ratio": stats[a]["median_s"] / stats[b]["median_s"], "paired_median": median(paired),
               "paired_min": min(paired), "paired_max": max(paired)}
        if cpu:
            out["per_step_median_ratio"] = stats[a]["median_step_s"] / stats[b]["median_step_s"]
            out["cpu_time_ratio"] = stats[a]["cpu_median_s"] / stats[b]["cpu_median_s"]
        return out

    ratios = {"a_at_trainer_over_plain": ratio("at_trainer", "at_plain")}
    if not args.skip_natural:
        ratios["b_at_over_nat_trainer"] = ratio("at_trainer", "nat_trainer")
        ratios["b_at_over_nat_plain"] = ratio("at_plain", "nat_plain")
        ratios["nat_trainer_over_plain"] = ratio("nat_trainer", "nat_plain")

    # ------------------------------------------------------------------ report
    labels = {"at_trainer": f"AT  PGD-{K}, Trainer + AdvTraining", "at_plain": f"AT  PGD-{K}, plain loop",
              "nat_trainer": "natural, Trainer + Classifier", "nat_plain": "natural, plain loop"}
    print(f"\n{'configuration':<36}{'wall ms/step':>13}{'images/s':>10}"
          + (f"{'step med ms':>12}{'CPU ms/step':>12}" if cpu else "") + "   runs, wall ms/step")
    for key, st in stats.items():
        runs_txt = " ".join(f"{x * 1e3:.1f}" for x in st["runs_s"])
        extra = f"{st['median_step_s'] * 1e3:>12.2f}{st['cpu_median_s'] * 1e3:>12.2f}" if cpu else ""
        print(f"{labels[key]:<36}{st['median_s'] * 1e3:>13.2f}{st['images_per_s']:>10.1f}{extra}   {runs_txt}")
    over_ms = (stats["at_trainer"]["median_s"] - stats["at_plain"]["median_s"]) * 1e3
    line = f"Lightning overhead per AT step: {over_ms:+.2f} ms wall"
    if cpu:
        line += f", {(stats['at_trainer']['cpu_median_s'] - stats['at_plain']['cpu_median_s']) * 1e3:+.2f} ms CPU"
    print(line)
    if not args.skip_natural:
        nat_ms = (stats["nat_trainer"]["median_s"] - stats["nat_plain"]["median_s"]) * 1e3
        line = f"Lightning overhead per natural step: {nat_ms:+.2f} ms wall"
        if cpu:
            line += (f", {(stats['nat_trainer']['cpu_median_s'] - stats['nat_plain']['cpu_median_s']) * 1e3:+.2f}"
                     " ms CPU")
        print(line)

    rows = [("(a) AT step: Trainer / plain", ratios["a_at_trainer_over_plain"], f"<= {RATIO_A_TARGET:.2f}",
             RATIO_A_TARGET)]
    if not args.skip_natural:
        rows.append(("(b) AT / natural, both Trainer", ratios["b_at_over_nat_trainer"],
                     f"<= {target_b:.3f}", target_b))
        rows.append(("(b) AT / natural, both plain", ratios["b_at_over_nat_plain"], f"<= {target_b:.3f}",
                     target_b))
        rows.append(("    natural step: Trainer / plain", ratios["nat_trainer_over_plain"], "(info)", None))
    # verdict: wall-clock ratio of medians; on CPU the process-CPU-time ratio instead (immune to the
    # time this process spends descheduled on a shared machine)
    vkey = "cpu_time_ratio" if cpu else "ratio"
    print(f"\n{'check':<36}{'wall':>8}{'paired med [min, max]':>26}"
          + (f"{'step med':>10}{'CPU time':>10}" if cpu else "") + f"{'target':>12}{'result':>8}")
    verdicts = {}
    for name, rt, tgt_txt, tgt in rows:
        res = "" if tgt is None else ("PASS" if rt[vkey] <= tgt else "MISS")
        if tgt is not None:
            verdicts[name.strip()] = {"value": rt[vkey], "target": tgt, "result": res, "basis": vkey}
        pr = f"{rt['paired_median']:.3f} [{rt['paired_min']:.3f}, {rt['paired_max']:.3f}]"
        extra = f"{rt['per_step_median_ratio']:>10.3f}{rt['cpu_time_ratio']:>10.3f}" if cpu else ""
        print(f"{name:<36}{rt['ratio']:>8.3f}{pr:>26}{extra}{tgt_txt:>12}{res:>8}")
    print("wall = ratio of the medians over repeats of each run's mean wall time per step; paired = per-repeat "
          "ratios of adjacent runs")
    if cpu:
        print("step med = ratio of the medians of all per-step wall times; CPU time = ratio of the medians of "
              "process CPU time per step.\nPASS/MISS uses the CPU-time ratio on CPU (wall-clock on a shared "
              "machine mixes in other processes' load), the wall ratio on CUDA.")
    print(f"(b) target 1.1 * (1 + 2K/3) = {target_b:.3f} for K = {K}; timing loop took {elapsed:.0f} s")

    if args.json is not None:
        payload = {
            "versions": {"torch": torch.__version__, "lightning": lightning.__version__,
                         "python": platform.python_version()},
            "device": str(args.device), "device_name": dev_name, "threads": args.threads,
            "config": {k: (str(v) if isinstance(v, (torch.device, Path)) else v) for k, v in vars(args).items()},
            "stats": stats, "ratios": ratios, "targets": {"a": RATIO_A_TARGET, "b": target_b},
            "verdicts": verdicts, "timing_loop_s": elapsed,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2))
        print(f"wrote {args.json}")

    if args.profile != "none":
        profile_runs(args, loader)
    return 0


if __name__ == "__main__":
    sys.exit(main())
