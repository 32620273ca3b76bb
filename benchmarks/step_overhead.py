"""Host overhead of one training step: Trainer + module minus a plain loop doing the same work.

``python benchmarks/bench_adv_training.py --mode overhead [--sync-debug]`` runs this on the CPU
with a model small enough that the host dominates (an MLP 64-32-10 on 1x8x8 inputs, batch 16), for
three steps: natural (``Classifier``), PGD-AT (``AdvTraining(PGDAT)``, PGD-2) and TRADES
(``AdvTraining(TRADES)``, PGD-2). The plain step calls the same objective on the same batch
(``objective.step(module, x, y)``, the no-grad eval-mode clean forward where the module tracks
``train/acc`` from one), then ``zero_grad``, ``backward``, ``SGD.step``: the difference is
Lightning's loop plus the module's metric bookkeeping and logging, nothing else.

Timing is interleaved step by step: inside each Trainer fit a callback runs one plain step, on its
own copy of the module and optimiser, on the same batch, right after (even batches) or before (odd
ones) every Trainer step; the
Trainer step is its loop period minus that plain step, and the overhead of step i is
``(period_i - plain_i) - plain_i``. Reported: the median over all timed steps of ``--repeats``
fits, with the median of each fit (their min and max are the spread).

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


class Interleave(Callback):
    """Loop periods of the Trainer and, right after each Trainer step, one timed plain step."""

    def __init__(self, plain: pl.LightningModule, warmup: int) -> None:
        self.plain, self.opt, self.warmup = plain, plain_optimizer(plain), warmup
        self.stamps: list[float] = []
        self.plain_s: list[float] = []

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if batch_idx >= self.warmup:
            self.stamps.append(time.perf_counter())
        if batch_idx % 2:  # odd batches: the plain step before the Trainer step, even ones: after it
            self._plain(batch, batch_idx)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if batch_idx % 2 == 0:
            self._plain(batch, batch_idx)

    def _plain(self, batch: Any, batch_idx: int) -> None:
        t = time.perf_counter()
        plain_step(self.plain, self.opt, batch[0], batch[1])
        if batch_idx >= self.warmup:
            self.plain_s.append(time.perf_counter() - t)


def overhead_fit(kind: str, steps: int, warmup: int) -> list[float]:
    """One fit of ``warmup + steps + 1`` batches; per timed step ``(period - plain) - plain`` in seconds."""
    cb = Interleave(make_module(kind), warmup)
    n = warmup + steps + 1
    trainer(n, [cb]).fit(make_module(kind), train_dataloaders=make_loader(n))
    periods = [b - a for a, b in zip(cb.stamps, cb.stamps[1:])]
    return [p - 2 * q for p, q in zip(periods, cb.plain_s)]


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
    steps = args.steps if args.steps is not None else 100
    warmup = args.warmup if args.warmup is not None else 10
    repeats = args.repeats if args.repeats is not None else 5
    print(f"\n[overhead] CPU, {SHAPE['arch']} {SHAPE['arch_kwargs']}, batch 16, PGD-2; {repeats} fits x {steps} "
          f"timed steps per kind, fits of the kinds interleaved; Trainer minus plain, ms/step")
    per_fit: dict[str, list[float]] = {k: [] for k in KINDS}
    all_steps: dict[str, list[float]] = {k: [] for k in KINDS}
    for r in range(repeats):
        for kind in (KINDS if r % 2 == 0 else KINDS[::-1]):
            d = overhead_fit(kind, steps, warmup)
            per_fit[kind].append(statistics.median(d) * 1e3)
            all_steps[kind] += [v * 1e3 for v in d]
    out: dict[str, Any] = {}
    for kind in KINDS:
        fits = per_fit[kind]
        med = statistics.median(all_steps[kind])
        q = statistics.quantiles(all_steps[kind], n=4)
        out[kind] = {"median_ms": med, "fit_medians_ms": fits, "iqr_ms": [q[0], q[2]]}
        print(f"  {kind:<8} Trainer - plain  {med:6.3f} ms/step   per-fit medians [{min(fits):.3f}, {max(fits):.3f}]"
              f"   steps IQR [{q[0]:.3f}, {q[2]:.3f}]", flush=True)
    if args.sync_debug:
        print("\n[sync-debug] tensor-to-Python conversions in one Trainer step (CPU: patched Tensor methods)")
        for kind in KINDS:
            sites = step_conversions(kind)
            out[f"sync_{kind}"] = sites
            syncs = {k: n for k, n in sites.items() if not host_only(k)}
            print(f"  {kind}: device syncs: {len(syncs) or 'none'}")
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
