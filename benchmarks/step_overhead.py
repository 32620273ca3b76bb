"""Host overhead of one training step: Trainer + module minus a plain loop doing the same work.

``python benchmarks/bench_adv_training.py --mode overhead [--sync-debug]`` runs this on the CPU
with a model small enough that the host dominates (an MLP 64-32-10 on 1x8x8 inputs, batch 16), for
three steps: natural (``Classifier``), PGD-AT (``AdvTraining(PGDAT)``, PGD-2) and TRADES
(``AdvTraining(TRADES)``, PGD-2). The plain step calls the same objective on the same batch
(``objective.step(module, x, y)``, the no-grad eval-mode clean forward where the module tracks
``train/acc`` from one), then ``zero_grad``, ``backward``, ``SGD.step``: the difference is
Lightning's loop plus the module's metric bookkeeping and logging, nothing else.

Timing: ``--repeats`` rounds, each a Trainer run and a plain run of every kind (ABBA order within
a round, the kinds' order alternating), ``--steps`` timed steps after ``--warmup`` per run (the
window holds whole loop periods: fetch, hooks, step; not the Trainer's set-up). Reported: the
median Trainer and plain ms/step over the rounds, their difference, and the per-round paired
differences (min, median, max) as the spread, on two clocks: wall time, and the CPU time of this
process (``time.process_time``), which a shared machine's other jobs do not inflate.

``--sync-debug`` (CPU): during one Trainer step (its hooks and the next batch fetch included),
every conversion of a tensor to a Python value (``item``, ``bool``, ``float``, ``int``,
``tolist``, ``cpu``, ``numpy``: what synchronises with a GPU) is recorded with the line that
made it. On CUDA the benchmark uses ``torch.cuda.set_sync_debug_mode`` instead.
"""
from __future__ import annotations

import argparse
import statistics
import time
import traceback
from typing import Any, Callable, Optional

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from lightning_adv.attacks import PGD, module_mode
from lightning_adv.modules.adv_training import AdvTraining
from lightning_adv.modules.classifier import Classifier
from lightning_adv.modules.optim import build_optimizer
from lightning_adv.objectives import PGDAT, TRADES

KINDS = ("natural", "pgd_at", "trades")
SHAPE = dict(arch="mlp", num_classes=10, in_channels=1, arch_kwargs={"input_size": 8, "hidden": [64, 32]})


def make_module(kind: str, seed: int = 0) -> pl.LightningModule:
    """The module of ``kind`` with seeded initial weights (the same for the Trainer and plain sides)."""
    torch.manual_seed(seed)
    if kind == "natural":
        return Classifier(**SHAPE)
    if kind == "pgd_at":
        return AdvTraining(objective=PGDAT(PGD(eps=8 / 255, steps=2, step_size=2 / 255, bn_mode="train")), **SHAPE)
    return AdvTraining(objective=TRADES(6.0, PGD(eps=0.031, steps=2, step_size=0.007, random_start=False,
                                                start_sigma=0.001, bn_mode="eval")), **SHAPE)


def make_loader(n_batches: int, batch: int = 16, seed: int = 0) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n_batches, batch, 1, 8, 8, generator=g)
    y = torch.randint(0, 10, (n_batches, batch), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=None, shuffle=False)


def plain_step(module: pl.LightningModule, opt: torch.optim.Optimizer, x: Tensor, y: Tensor) -> Tensor:
    """The work of ``module.training_step`` (without its logging) plus automatic optimisation."""
    if isinstance(module, AdvTraining):
        out = module.objective.step(module, x, y)
        if out.clean_logits is None and module.track_clean_acc:
            with torch.no_grad(), module_mode(module.model, "eval"):
                module.model(x)
        loss = out.loss
    else:
        loss = F.cross_entropy(module.model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.detach()


def plain_optimizer(module: pl.LightningModule) -> torch.optim.Optimizer:
    return build_optimizer(module.model.parameters(), module.optim_cfg)


def trainer(max_steps: int, callbacks: list, **kw: Any) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", devices=1, max_steps=max_steps, max_epochs=1, logger=False,
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      num_sanity_val_steps=0, limit_val_batches=0, callbacks=callbacks, **kw)


class Window(Callback):
    """Time stamps at the start of batches ``warmup .. warmup + steps``: the loop periods, fetch and hooks in."""

    def __init__(self, warmup: int, steps: int) -> None:
        self.start, self.end = warmup, warmup + steps
        self.stamps: list[tuple[float, float]] = []

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self.start <= batch_idx <= self.end:
            self.stamps.append((time.perf_counter(), time.process_time()))


def trainer_run(kind: str, steps: int, warmup: int) -> tuple[float, float]:
    """(wall, CPU) seconds per step of a Trainer fit over the window (set-up, warm-up, tear-down outside)."""
    cb = Window(warmup, steps)
    n = warmup + steps + 1
    trainer(n, [cb]).fit(make_module(kind), train_dataloaders=make_loader(n))
    (w0, c0), (w1, c1) = cb.stamps[0], cb.stamps[-1]
    return (w1 - w0) / steps, (c1 - c0) / steps


def plain_run(kind: str, steps: int, warmup: int) -> tuple[float, float]:
    """(wall, CPU) seconds per step of the plain loop over the same window of the same loader."""
    module = make_module(kind)
    opt = plain_optimizer(module)
    w0 = c0 = 0.0
    for i, (x, y) in enumerate(make_loader(warmup + steps + 1)):
        if i == warmup:
            w0, c0 = time.perf_counter(), time.process_time()
        if i == warmup + steps:
            return (time.perf_counter() - w0) / steps, (time.process_time() - c0) / steps
        plain_step(module, opt, x, y)
    raise RuntimeError("the loader ended early")


# --------------------------------------------------------------------------- sync debug (CPU)
HOST_CONVERSIONS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__", "cpu", "numpy")
#: conversions of tensors that live on the CPU whatever the device (no GPU sync): the attack's seed, drawn
#: from the global CPU generator (``Attack.run``)
HOST_ONLY = ("torch.randint(0, 2**62",)


def host_only(site: str) -> bool:
    """Whether a recorded conversion site reads a CPU-only tensor (no device sync on a GPU)."""
    return any(marker in site for marker in HOST_ONLY)


class HostConversions:
    """Context: record every tensor-to-Python conversion made from Python, with its call site."""

    def __init__(self) -> None:
        self.sites: dict[str, int] = {}
        self._saved: dict[str, Callable] = {}

    def _wrap(self, name: str, fn: Callable) -> Callable:
        def wrapper(t: Tensor, *a: Any, **k: Any) -> Any:
            frame = traceback.extract_stack(limit=2)[0]
            key = f"Tensor.{name} at {frame.filename}:{frame.lineno} ({(frame.line or '').strip()[:70]})"
            self.sites[key] = self.sites.get(key, 0) + 1
            return fn(t, *a, **k)
        return wrapper

    def __enter__(self) -> "HostConversions":
        for name in HOST_CONVERSIONS:
            self._saved[name] = getattr(torch.Tensor, name)
            setattr(torch.Tensor, name, self._wrap(name, self._saved[name]))
        return self

    def __exit__(self, *exc: Any) -> None:
        for name, fn in self._saved.items():
            setattr(torch.Tensor, name, fn)
        self._saved.clear()


class StepConversions(Callback):
    """Record the host conversions of the training step ``batch_idx`` (hooks and next fetch included)."""

    def __init__(self, batch_idx: int) -> None:
        self.batch_idx, self.probe = batch_idx, HostConversions()
        self._on = False

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if batch_idx == self.batch_idx:
            self.probe.__enter__()
            self._on = True
        elif self._on:
            self._stop()

    def _stop(self) -> None:
        if self._on:
            self.probe.__exit__(None, None, None)
            self._on = False

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._stop()


def step_conversions(kind: str, batch_idx: int = 2) -> dict[str, int]:
    probe = StepConversions(batch_idx)
    trainer(batch_idx + 2, [probe]).fit(make_module(kind), train_dataloaders=make_loader(batch_idx + 3))
    return probe.probe.sites


# --------------------------------------------------------------------------- main
def run(args: argparse.Namespace) -> dict:
    """Print and return the overhead of each kind (ms/step) and, with ``sync_debug``, the conversions."""
    torch.set_num_threads(args.threads)
    steps = args.steps if args.steps is not None else 200
    warmup = args.warmup if args.warmup is not None else 10
    repeats = args.repeats if args.repeats is not None else 5
    print(f"\n[overhead] CPU, {SHAPE['arch']} {SHAPE['arch_kwargs']}, batch 16, PGD-2; {repeats} rounds of "
          f"Trainer and plain runs of {steps} timed steps (ABBA order, kinds interleaved); ms/step")
    runs: dict[str, dict[str, list[tuple[float, float]]]] = {k: {"trainer": [], "plain": []} for k in KINDS}
    for r in range(repeats):
        for kind in (KINDS if r % 2 == 0 else KINDS[::-1]):
            for side in (("trainer", "plain") if r % 2 == 0 else ("plain", "trainer")):
                fn = trainer_run if side == "trainer" else plain_run
                runs[kind][side].append(fn(kind, steps, warmup))
    out: dict[str, Any] = {}
    print("  (wall: clock time, inflated when other jobs share the cores; CPU: this process's CPU time)")
    for kind in KINDS:
        out[kind] = {}
        for j, clock in enumerate(("wall", "CPU")):
            t = [v[j] * 1e3 for v in runs[kind]["trainer"]]
            p = [v[j] * 1e3 for v in runs[kind]["plain"]]
            diffs = [a - b for a, b in zip(t, p)]
            med = statistics.median(t) - statistics.median(p)
            out[kind][clock] = {"overhead_ms": med, "paired_ms": diffs, "trainer_ms": t, "plain_ms": p}
            print(f"  {kind:<8} {clock:<4} Trainer {statistics.median(t):7.3f}  plain {statistics.median(p):7.3f}  "
                  f"Trainer - plain {med:6.3f} ms/step   per-round differences [{min(diffs):.3f}, "
                  f"{statistics.median(diffs):.3f}, {max(diffs):.3f}] (min, median, max)", flush=True)
    if args.sync_debug:
        print("\n[sync-debug] tensor-to-Python conversions in one Trainer step (CPU: patched Tensor methods)")
        for kind in KINDS:
            sites = step_conversions(kind)
            out[f"sync_{kind}"] = sites
            syncs = {k: n for k, n in sites.items() if not host_only(k)}
            print(f"  {kind}: device syncs: {sum(syncs.values()) or 'none'}")
            for key, n in sorted(sites.items(), key=lambda kv: -kv[1]):
                print(f"    {n:3d} x {key}{'   [CPU generator: host only, no device sync]' if host_only(key) else ''}")
    return out


def compare_weights(kind: str, n_steps: int, trainer_kwargs: Optional[dict] = None) -> tuple[dict, dict]:
    """State dicts after ``n_steps`` of the Trainer and of the plain loop, same seed (for tests)."""
    plain = make_module(kind)
    opt = plain_optimizer(plain)
    torch.manual_seed(1)
    for x, y in make_loader(n_steps):
        plain_step(plain, opt, x, y)
    module = make_module(kind)
    torch.manual_seed(1)
    trainer(n_steps, [], **(trainer_kwargs or {})).fit(module, train_dataloaders=make_loader(n_steps))
    return module.model.state_dict(), plain.model.state_dict()
