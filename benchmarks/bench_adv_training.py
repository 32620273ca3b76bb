#!/usr/bin/env python
"""Benchmark: PGD-10 adversarial training through Lightning vs a plain PyTorch loop.

One run measures, on the same model, batch and PGD settings:

(a) time per ``AdvTraining(objective=PGDAT(...))`` step run by the Lightning ``Trainer``
    divided by time per step of a plain PyTorch loop written here that does the same
    work (target: ratio <= 1.05);
(b) time per PGD-K adversarial-training step divided by time per natural training
    step (forward + backward + SGD step), both through the Trainer (``AdvTraining`` vs
    ``Classifier``) and both plain (target: ratio <= 1.1 * (1 + 2K/3)).

The plain loop does exactly the work of ``AdvTraining.training_step`` plus Lightning's
automatic optimisation: a random start in the Linf ball, K steps of
``torch.autograd.grad`` w.r.t. the perturbation with the model in train mode (sign step,
projection, clamp to [0, 1]), the forward at ``x_adv``, cross-entropy, the extra no-grad
eval-mode forward on the clean batch when ``track_clean_acc`` (one switch for both
sides: ``--no-clean-acc`` turns it off on both), ``zero_grad``, backward, ``SGD.step``.
It does *not* do the module's bookkeeping (torchmetrics updates, ``self.log`` calls, the
``lr`` lookup) nor Lightning's loop machinery: that is the overhead being measured. The
natural plain step is ``zero_grad``, forward, cross-entropy, backward, ``SGD.step``; the
natural Trainer step is ``Classifier`` (which also updates and logs its metrics).

Data: a fixed in-memory data set on the device, a ``TensorDataset`` of pre-made batches
read by ``DataLoader(batch_size=None)``; both sides iterate the same loader. Each fit or
plain run trains ``warmup + steps + 1`` batches and only the ``steps`` loop periods
after the warm-up are timed (from the start of batch ``warmup`` to the start of batch
``warmup + steps``, so data fetch, hooks and logging are inside; Trainer set-up and
tear-down are not). Two timing modes (``--mode``):

* ``runs``: whole runs alternated in ABBA order (Trainer, plain, plain, Trainer, ...),
  clock read after a device synchronise at both ends of the window; medians over the
  ``--repeats`` runs. The only mode that is meaningful on CUDA (no per-step syncs).
* ``interleaved`` (CPU only): inside each Trainer fit a callback runs one plain step, on
  its own copy of the model and optimiser, on the same batch, right after (even steps) or
  before (odd steps) every Trainer step (in AT fits also one plain natural step); the
  Trainer step's time is its loop period minus the plain steps. Both sides then see the
  same background load step by step, which is what makes a 5% comparison possible on a
  shared CPU. Ratios are medians
  of the per-step paired ratios over all timed steps of ``--repeats`` fits; the Trainer
  AT/natural ratio is chained: (AT_T/AT_P) * (AT_P/NAT_P) / (NAT_T/NAT_P).

Default ``--mode``: ``both`` on CPU (verdicts from ``interleaved``), ``runs`` on CUDA. A third,
``--mode overhead`` (CPU, ``benchmarks/step_overhead.py``), prints the host overhead of a step,
Trainer minus plain in ms, for natural, PGD-AT and TRADES on a model small enough that the host
dominates; with ``--sync-debug`` it lists every tensor-to-Python conversion of one step.

Examples::

    python benchmarks/bench_adv_training.py                      # CPU: small_cnn 1x28x28, batch 32
    python benchmarks/bench_adv_training.py --device cuda --bf16 --channels-last
    python benchmarks/bench_adv_training.py --arch resnet18 --batch-size 32 --steps 4 --repeats 3
    python benchmarks/bench_adv_training.py --profile cprofile    # also profile one Trainer / plain AT run

This is a benchmark, not a test: it never asserts on timings and exits 0 when a target
is missed.
"""
from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import logging
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
from lightning_adv.objectives import PGDAT  # noqa: E402
from lightning_adv.modules.classifier import Classifier  # noqa: E402
from lightning_adv.modules.compute import ComputeConfig  # noqa: E402
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
    p.add_argument("--repeats", type=int, default=None,
                   help="runs (or interleaved fits) per configuration; default 5 on CUDA, 4 on CPU")
    p.add_argument("--mode", choices=("runs", "interleaved", "both", "overhead"), default=None,
                   help="timing mode (see the module docstring); default both on CPU, runs on CUDA; overhead: "
                        "Trainer minus plain ms/step of natural, PGD-AT and TRADES steps on a tiny CPU model "
                        "(benchmarks/step_overhead.py; uses --steps, --warmup, --repeats, --sync-debug)")
    p.add_argument("--pgd-steps", type=int, default=10, help="K, the attack steps")
    p.add_argument("--eps", type=float, default=8 / 255)
    p.add_argument("--step-size", type=float, default=2 / 255)
    p.add_argument("--no-clean-acc", action="store_true",
                   help="track_clean_acc=False (and no clean eval forward in the plain loop)")
    p.add_argument("--skip-natural", action="store_true", help="skip the natural-training runs (no ratio b)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--bf16", action="store_true",
                   help='bf16 autocast: Trainer precision="bf16-mixed", torch.autocast on the plain side')
    p.add_argument("--channels-last", action="store_true",
                   help="model and inputs in channels_last on both sides (the module option compute.memory_format)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the backbone on both sides (the module option compute.compile)")
    p.add_argument("--compile-backend", default="inductor", help="torch.compile backend with --compile")
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads for both sides; default 1 on CPU (least noisy on a shared "
                        "machine), unchanged on CUDA")
    p.add_argument("--no-cudnn-benchmark", action="store_true", help="cudnn.benchmark=False on both sides")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--profile", choices=("none", "cprofile", "torch"), default="none",
                   help="after timing, profile one Trainer AT run and one plain AT run and print the top entries")
    p.add_argument("--sync-debug", action="store_true",
                   help="CUDA: after timing, run one Trainer AT fit with torch.cuda.set_sync_debug_mode('warn') "
                        "during one step and list the Python lines that synchronised with the GPU; with --mode "
                        "overhead (CPU): list the tensor-to-Python conversions of one step of each kind")
    p.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    return p.parse_args(argv)


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    if args.mode == "overhead":  # its own defaults (benchmarks/step_overhead.py): CPU, 1 thread
        args.device, args.threads = torch.device("cpu"), args.threads or 1
        return args
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
        args.repeats = 5 if cuda else 4
    if args.mode is None:
        args.mode = "runs" if cuda else "both"
    if cuda and args.mode != "runs":
        raise SystemExit("--mode interleaved/both needs per-step device syncs: use --mode runs on CUDA")
    if args.sync_debug and not cuda:
        raise SystemExit("--sync-debug needs a CUDA device")
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


# --------------------------------------------------------------------------- set-up
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_loader(args: argparse.Namespace) -> DataLoader:
    """Pre-made batches on the device; ``DataLoader(batch_size=None)`` yields them as they are."""
    nb = args.warmup + args.steps + 1
    g = torch.Generator().manual_seed(args.seed)
    c, s, b = args.in_channels, args.image_size, args.batch_size
    if args.channels_last:  # (nb, B, H, W, C) permuted: every batch x[i] is contiguous in channels_last
        x = torch.rand(nb, b, s, s, c, generator=g).permute(0, 1, 4, 2, 3)
    else:
        x = torch.rand(nb, b, c, s, s, generator=g)
    y = torch.randint(0, args.num_classes, (nb, b), generator=g)
    return DataLoader(TensorDataset(x.to(args.device), y.to(args.device)), batch_size=None, shuffle=False,
                      num_workers=0)


def optim_cfg() -> OptimConfig:
    # the thesis recipe (SGD lr 0.1, momentum 0.9, wd 2e-4); the LR schedule steps per epoch, outside the window
    return OptimConfig()


def make_module(args: argparse.Namespace, kind: str) -> pl.LightningModule:
    compute = ComputeConfig(memory_format="channels_last" if args.channels_last else "contiguous_format",
                            compile=args.compile, compile_backend=args.compile_backend)
    common = dict(arch=args.arch, num_classes=args.num_classes, in_channels=args.in_channels,
                  arch_kwargs=args.arch_kwargs, optim=optim_cfg(), compute=compute)
    torch.manual_seed(args.seed)
    if kind == "at":
        attack = PGD(eps=args.eps, steps=args.pgd_steps, step_size=args.step_size, norm="linf",
                     random_start=True, restarts=1, bn_mode="train", loss="ce")
        module: pl.LightningModule = AdvTraining(objective=PGDAT(attack=attack),
                                                 track_clean_acc=args.track_clean_acc, **common)
    else:
        module = Classifier(**common)
    return module


def make_plain(args: argparse.Namespace, kind: str) -> tuple[nn.Module, torch.optim.Optimizer]:
    """The same network with the same initial weights as the Trainer side, and a plain SGD."""
    model = make_module(args, kind).model.to(args.device)
    model.train()
    cfg = optim_cfg()
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                          nesterov=cfg.nesterov)
    return model, opt


# --------------------------------------------------------------------------- plain steps
def plain_at_step(model: nn.Module, opt: torch.optim.Optimizer, x: Tensor, y: Tensor,
                  args: argparse.Namespace) -> None:
    """``AdvTraining.training_step`` (method pgd, loss ce, bn_mode train) + automatic optimisation."""
    eps, alpha = args.eps, args.step_size
    opt.zero_grad(set_to_none=True)
    with torch.autocast(args.device.type, dtype=torch.bfloat16, enabled=args.bf16):
        model.train()
        delta = torch.empty_like(x).uniform_(-eps, eps).clamp(-eps, eps)
        delta = (x + delta).clamp_(0.0, 1.0) - x
        for _ in range(args.pgd_steps):
            delta.requires_grad_(True)
            loss = F.cross_entropy(model(x + delta).float(), y, reduction="none")
            (grad,) = torch.autograd.grad(loss.sum(), delta)
            delta = (delta.detach() + alpha * grad.sign()).clamp(-eps, eps)
            delta = (x + delta).clamp_(0.0, 1.0) - x
        x_adv = (x + delta).detach()
        loss = F.cross_entropy(model(x_adv), y)
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


PLAIN_STEPS = {"at": plain_at_step, "nat": plain_nat_step}


# --------------------------------------------------------------------------- timing
class WindowTimer(Callback):
    """Time-stamps (after a device sync at the window ends) at the start of batches ``start..end``.

    With ``plain`` steps given (interleaved mode), also runs each of them on the same batch
    next to every Trainer step (after it on even, before it on odd batch indices) and times
    them; they are subtracted from the Trainer's loop period.
    """

    def __init__(self, args: argparse.Namespace,
                 plain: Optional[dict[str, tuple[nn.Module, torch.optim.Optimizer, Callable]]] = None) -> None:
        self.args = args
        self.start, self.end = args.warmup, args.warmup + args.steps
        self.stamps: list[float] = []
        self.plain = plain or {}
        self.plain_s: dict[str, list[float]] = {k: [] for k in self.plain}
        self.threads = -1

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.threads = torch.get_num_threads()

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if batch_idx in (self.start, self.end):
            sync(self.args.device)
        if self.start <= batch_idx <= self.end:
            self.stamps.append(time.perf_counter())
        if batch_idx % 2 == 1:  # odd steps: plain step(s) before the Trainer step, even steps: after
            self._run_plain(batch, batch_idx)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if batch_idx % 2 == 0:
            self._run_plain(batch, batch_idx)

    def _run_plain(self, batch: Any, batch_idx: int) -> None:
        # inside [stamp i, stamp i+1) either way; warm-up steps get their plain steps too (untimed)
        if batch_idx >= self.end:
            return
        for name, (model, opt, step) in self.plain.items():
            t = time.perf_counter()
            step(model, opt, batch[0], batch[1], self.args)
            if batch_idx >= self.start:
                self.plain_s[name].append(time.perf_counter() - t)


def run_trainer(args: argparse.Namespace, kind: str, loader: DataLoader, interleave: bool = False,
                profiler: Optional[Callable[[], Any]] = None) -> dict:
    """One fit; with ``interleave``, plain steps of the same kind (and, for AT, natural) run in between."""
    module = make_module(args, kind)
    plain = None
    if interleave:
        kinds = [kind] + (["nat"] if kind == "at" and not args.skip_natural else [])
        plain = {k: (*make_plain(args, k), PLAIN_STEPS[k]) for k in kinds}
    timer = WindowTimer(args, plain)
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
    torch.manual_seed(args.seed + 1)
    with (profiler() if profiler is not None else contextlib.nullcontext()) as prof:
        trainer.fit(module, train_dataloaders=loader)
    if timer.threads != args.threads:
        print(f"WARNING: torch threads inside the Trainer = {timer.threads}, expected {args.threads}",
              file=sys.stderr)
    periods = [b - a for a, b in zip(timer.stamps, timer.stamps[1:])]
    out: dict = {"mean_s": (timer.stamps[-1] - timer.stamps[0]) / args.steps, "prof": prof}
    if interleave:
        plain_total = [sum(ts) for ts in zip(*timer.plain_s.values())]
        out["trainer_step_s"] = [p - q for p, q in zip(periods, plain_total)]
        out["plain_step_s"] = timer.plain_s
    return out


def run_plain(args: argparse.Namespace, kind: str, loader: DataLoader,
              profiler: Optional[Callable[[], Any]] = None) -> dict:
    model, opt = make_plain(args, kind)
    step = PLAIN_STEPS[kind]
    start, end = args.warmup, args.warmup + args.steps
    stamps: list[float] = []
    torch.manual_seed(args.seed + 1)
    with (profiler() if profiler is not None else contextlib.nullcontext()) as prof:
        for i, (x, y) in enumerate(loader):
            x = x.to(args.device, non_blocking=True)
            y = y.to(args.device, non_blocking=True)
            if i in (start, end):
                sync(args.device)
            if start <= i <= end:
                stamps.append(time.perf_counter())
            step(model, opt, x, y, args)
    return {"mean_s": (stamps[-1] - stamps[0]) / args.steps, "prof": prof}


# --------------------------------------------------------------------------- profiling
def profile_runs(args: argparse.Namespace, loader: DataLoader) -> None:
    print(f"\n=== profile ({args.profile}) of one AT run per side ===")
    for side, fn in (("Trainer", run_trainer), ("plain", run_plain)):
        if args.profile == "cprofile":
            res = fn(args, "at", loader, profiler=cProfile.Profile)
            s = io.StringIO()
            pstats.Stats(res["prof"], stream=s).sort_stats("tottime").print_stats(25)
            print(f"\n--- cProfile, {side} AT run (sorted by tottime, top 25) ---")
            print(s.getvalue())
        else:
            from torch.profiler import ProfilerActivity, profile

            acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device.type == "cuda" else [])
            res = fn(args, "at", loader, profiler=lambda: profile(activities=acts))
            print(f"\n--- torch.profiler, {side} AT run (top 25 by self CPU time) ---")
            print(res["prof"].key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


class SyncDebug(Callback):
    """Record the GPU synchronisations of one training step (batch ``warmup``), hooks included."""

    def __init__(self, batch_idx: int) -> None:
        self.batch_idx = batch_idx
        self.records: list[warnings.WarningMessage] = []
        self._ctx: Optional[warnings.catch_warnings] = None

    def _stop(self) -> None:
        if self._ctx is not None:
            torch.cuda.set_sync_debug_mode(0)
            self._ctx.__exit__(None, None, None)
            self._ctx = None

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if batch_idx == self.batch_idx:
            torch.cuda.synchronize()
            self._ctx = warnings.catch_warnings(record=True)
            self.records = self._ctx.__enter__()
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
        elif batch_idx == self.batch_idx + 1:  # the step, its logging and the next batch fetch
            self._stop()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._stop()


def sync_debug_run(args: argparse.Namespace, loader: DataLoader) -> None:
    module = make_module(args, "at")
    probe = SyncDebug(args.warmup)
    trainer = pl.Trainer(accelerator="gpu", devices=[args.device.index],
                         precision="bf16-mixed" if args.bf16 else "32-true", max_steps=args.warmup + 2,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                         benchmark=args.cudnn_benchmark, callbacks=[probe])
    trainer.fit(module, train_dataloaders=loader)
    sites: dict[str, int] = {}
    for w in probe.records:
        if "synchroniz" in str(w.message).lower():
            key = f"{w.filename}:{w.lineno}"
            sites[key] = sites.get(key, 0) + 1
    print("\n=== GPU synchronisations in one Trainer AT step (torch.cuda.set_sync_debug_mode) ===")
    if not sites:
        print("none recorded")
    for key, n in sorted(sites.items(), key=lambda kv: -kv[1]):
        print(f"  {n:4d} x  {key}")


# --------------------------------------------------------------------------- main
def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def _ratio(a: list[float], b: list[float], paired: bool, use_paired: bool = False) -> dict:
    """Ratio of the medians of ``a`` and ``b``; with ``paired``, also the median and range of the
    element-wise ratios, which become ``ratio`` with ``use_paired``."""
    out = {"ratio_of_medians": median(a) / median(b)}
    if paired:
        r = [x / y for x, y in zip(a, b)]
        out.update(paired_median=median(r), paired_min=min(r), paired_max=max(r))
    out["ratio"] = out["paired_median"] if use_paired else out["ratio_of_medians"]
    return out


def configure_runtime(args: argparse.Namespace, cudnn_benchmark: bool = True) -> bool:
    """Quiet Lightning, fix the thread count and select the device; True when it is CUDA."""
    warnings.filterwarnings("ignore")
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    torch.set_num_threads(args.threads)
    cuda = args.device.type == "cuda"
    if cuda:
        torch.cuda.set_device(args.device)
        torch.backends.cudnn.benchmark = cudnn_benchmark
    return cuda


def main(argv: Optional[list[str]] = None) -> int:
    args = resolve(parse_args(argv))
    if args.mode == "overhead":
        configure_runtime(args)
        from step_overhead import run as run_overhead  # benchmarks/ is on sys.path when run as a script

        results = run_overhead(args)
        if args.json is not None:
            args.json.write_text(json.dumps(results, indent=2))
        return 0
    cuda = configure_runtime(args, args.cudnn_benchmark)
    if not cuda and args.bf16:
        print("note: --bf16 on CPU uses CPU autocast; the option is meant for GPUs", file=sys.stderr)

    K = args.pgd_steps
    target_b = 1.1 * (1 + 2 * K / 3)
    prec = "bf16-mixed" if args.bf16 else "fp32"
    dev_name = torch.cuda.get_device_name(args.device) if cuda else (platform.processor() or platform.machine())
    print(f"torch {torch.__version__} | lightning {lightning.__version__} | python {platform.python_version()}\n"
          f"device {args.device} ({dev_name}), torch threads {args.threads} (both sides), "
          f"cudnn.benchmark {args.cudnn_benchmark if cuda else 'n/a'}\n"
          f"arch {args.arch} {args.in_channels}x{args.image_size}x{args.image_size}"
          f"{' ' + json.dumps(args.arch_kwargs) if args.arch_kwargs else ''}, batch {args.batch_size}, "
          f"precision {prec}, channels_last {args.channels_last}, compile {args.compile}\n"
          f"PGD-{K} Linf eps {args.eps * 255:g}/255 step {args.step_size * 255:g}/255 random start, "
          f"bn_mode train, track_clean_acc {args.track_clean_acc} (both sides)\n"
          f"{args.steps} timed + {args.warmup} warm-up steps per run, {args.repeats} repeats, mode {args.mode}",
          flush=True)

    loader = make_loader(args)
    kinds = ["at"] if args.skip_natural else ["at", "nat"]
    t_start = time.perf_counter()
    results: dict[str, Any] = {}

    # ---------------------------------------------------------------- runs mode (ABBA)
    if args.mode in ("runs", "both"):
        print("\n[runs] whole runs, ABBA order; wall ms/step over the window")
        runs: dict[str, list[float]] = {f"{k}_{s}": [] for k in kinds for s in ("trainer", "plain")}
        for r in range(args.repeats):
            order = ("trainer", "plain") if r % 2 == 0 else ("plain", "trainer")
            for kind in kinds:
                for side in order:
                    res = (run_trainer if side == "trainer" else run_plain)(args, kind, loader)
                    runs[f"{kind}_{side}"].append(res["mean_s"])
                    print(f"  repeat {r + 1}/{args.repeats} {kind:>3} {side:<7} {res['mean_s'] * 1e3:9.2f}",
                          flush=True)
        med = {k: median(v) for k, v in runs.items()}
        ratios = {"a": _ratio(runs["at_trainer"], runs["at_plain"], paired=True)}
        if not args.skip_natural:
            ratios["b_trainer"] = _ratio(runs["at_trainer"], runs["nat_trainer"], paired=True)
            ratios["b_plain"] = _ratio(runs["at_plain"], runs["nat_plain"], paired=True)
            ratios["nat_trainer_over_plain"] = _ratio(runs["nat_trainer"], runs["nat_plain"], paired=True)
        results["runs"] = {"run_means_s": runs, "median_s": med, "ratios": ratios}

    # ---------------------------------------------------------------- interleaved mode
    if args.mode in ("interleaved", "both"):
        print("\n[interleaved] plain step(s) next to every Trainer step, same batch; per-fit medians, ms/step")
        steps: dict[str, list[float]] = {k: [] for k in ("at_trainer", "at_plain", "at_fit_nat_plain",
                                                           "nat_trainer", "nat_plain")}
        for r in range(args.repeats):
            for kind in kinds:
                res = run_trainer(args, kind, loader, interleave=True)
                steps[f"{kind}_trainer"] += res["trainer_step_s"]
                steps[f"{kind}_plain"] += res["plain_step_s"][kind]
                line = (f"  repeat {r + 1}/{args.repeats} {kind:>3} fit: Trainer "
                        f"{median(res['trainer_step_s']) * 1e3:9.2f}   plain {kind} "
                        f"{median(res['plain_step_s'][kind]) * 1e3:9.2f}")
                if kind == "at" and "nat" in res["plain_step_s"]:
                    steps["at_fit_nat_plain"] += res["plain_step_s"]["nat"]
                    line += f"   plain nat {median(res['plain_step_s']['nat']) * 1e3:9.2f}"
                print(line, flush=True)
        med = {k: median(v) for k, v in steps.items() if k != "at_fit_nat_plain" and v}
        # paired estimators: each ratio compares steps run back to back under the same load
        ratios = {"a": _ratio(steps["at_trainer"], steps["at_plain"], paired=True, use_paired=True)}
        if not args.skip_natural:
            b_plain = _ratio(steps["at_plain"], steps["at_fit_nat_plain"], paired=True, use_paired=True)
            nat = _ratio(steps["nat_trainer"], steps["nat_plain"], paired=True, use_paired=True)
            # AT_T / NAT_T = (AT_T / AT_P) * (AT_P / NAT_P) / (NAT_T / NAT_P), each factor a paired median
            ratios["b_trainer"] = {"ratio": ratios["a"]["ratio"] * b_plain["ratio"] / nat["ratio"],
                                   "note": "(a) x (b plain) / (natural Trainer/plain), paired medians"}
            ratios["b_plain"] = b_plain
            ratios["nat_trainer_over_plain"] = nat
        results["interleaved"] = {"step_s": steps, "median_s": med, "ratios": ratios}
    elapsed = time.perf_counter() - t_start

    # ---------------------------------------------------------------- report
    basis = "interleaved" if "interleaved" in results else "runs"
    labels = {"at_trainer": f"AT PGD-{K}, Trainer + AdvTraining", "at_plain": f"AT PGD-{K}, plain loop",
              "nat_trainer": "natural, Trainer + Classifier", "nat_plain": "natural, plain loop"}
    modes = [m for m in ("runs", "interleaved") if m in results]
    print(f"\n{'configuration':<34}" + "".join(f"{m + ' ms/step':>22}" for m in modes)
          + f"{'images/s (' + basis + ')':>26}")
    for key in results[basis]["median_s"]:
        cells = "".join(f"{results[m]['median_s'][key] * 1e3:>22.2f}" for m in modes)
        print(f"{labels[key]:<34}{cells}{args.batch_size / results[basis]['median_s'][key]:>26.1f}")
    for m in modes:
        # runs: difference of the medians; interleaved: median of the per-step differences
        if m == "runs":
            md = results[m]["median_s"]
            over = {k: md[f"{k}_trainer"] - md[f"{k}_plain"] for k in kinds}
        else:
            st = results[m]["step_s"]
            over = {k: median([t - p for t, p in zip(st[f"{k}_trainer"], st[f"{k}_plain"])]) for k in kinds}
        results[m]["lightning_overhead_s"] = over
        print(f"[{m}] Lightning overhead per step (Trainer - plain): "
              + ", ".join(f"{'AT' if k == 'at' else 'natural'} {v * 1e3:+.2f} ms" for k, v in over.items()))

    checks = [("a", "(a) AT step: Trainer / plain", RATIO_A_TARGET)]
    if not args.skip_natural:
        checks += [("b_trainer", "(b) AT / natural, both Trainer", target_b),
                   ("b_plain", "(b) AT / natural, both plain", target_b),
                   ("nat_trainer_over_plain", "    natural step: Trainer / plain", None)]
    print(f"\n{'check':<36}" + "".join(f"{m:>13}" for m in modes)
          + f"{'paired ratios: med [min, max] (' + basis + ')':>48}{'target':>12}{'result':>8}")
    verdicts = {}
    for key, name, tgt in checks:
        rt = results[basis]["ratios"][key]
        cells = "".join(f"{results[m]['ratios'][key]['ratio']:>13.3f}" for m in modes)
        pr = (f"{rt['paired_median']:.3f} [{rt['paired_min']:.3f}, {rt['paired_max']:.3f}]"
              if "paired_median" in rt else "-")
        res = "" if tgt is None else ("PASS" if rt["ratio"] <= tgt else "MISS")
        if tgt is not None:
            verdicts[key] = {"ratio": rt["ratio"], "target": tgt, "result": res, "basis": basis}
        tgt_txt = "(info)" if tgt is None else f"<= {tgt:.3f}"
        print(f"{name:<36}{cells}{pr:>48}{tgt_txt:>12}{res:>8}")
    print("runs: ratio of the medians over runs; interleaved: median of the per-step paired ratios "
          "(the (b) Trainer row chains (a), (b) plain and natural Trainer/plain).")
    print(f"PASS/MISS from the {basis} mode. (b) target 1.1 * (1 + 2K/3) = {target_b:.3f} for K = {K}. "
          f"Timing took {elapsed:.0f} s.")
    print(f"torch {torch.__version__}, lightning {lightning.__version__}, device {args.device} ({dev_name}), "
          f"threads {args.threads}")

    if args.json is not None:
        payload = {
            "versions": {"torch": torch.__version__, "lightning": lightning.__version__,
                         "python": platform.python_version()},
            "device": str(args.device), "device_name": dev_name, "threads": args.threads,
            "command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
            "config": {k: (str(v) if isinstance(v, (torch.device, Path)) else v) for k, v in vars(args).items()},
            "results": results, "targets": {"a": RATIO_A_TARGET, "b": target_b}, "verdicts": verdicts,
            "timing_s": elapsed,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2))
        print(f"wrote {args.json}")

    if args.profile != "none":
        profile_runs(args, loader)
    if args.sync_debug:
        sync_debug_run(args, loader)
    return 0


if __name__ == "__main__":
    sys.exit(main())
