#!/usr/bin/env python
"""Benchmark: knowledge distillation, ARD and Fast-ARD through Lightning (thesis table 4.10).

One run measures, on the same student, teacher, batch and attack settings:

(a) the training-time ratio of Fast-ARD (m replays, 200/m epochs) to KD (200 epochs): time
    per Fast-ARD batch divided by m x time per KD batch, both through the ``Trainer``
    (``FastARD`` vs ``KnowledgeDistillation``). That is the ratio of whole runs with the
    same number of parameter updates per image, which table 4.10 reports: Fast-ARD m=4
    5.15 h / KD 5.13 h = 1.004 (m=8: 5.10 h, 0.994). Target: **<= 1.05**. Measured for
    ``perturbation_loss="ard"`` (delta ascends the ARD loss with the input gradient of the
    same backward; the variant the configs use) and, for information, ``"ce"`` (delta
    first ascends the student's CE: one more forward + input-gradient backward per replay);
(b) time per ``ARD`` step run by the ``Trainer`` divided by time per step of a plain
    PyTorch loop written here that does the same work. Target: **<= 1.05**.

The timing machinery is ``benchmarks/bench_adv_training.py``'s (imported, not copied): the
same in-memory loader of pre-made batches, the same window timer (``warmup + steps + 1``
batches per fit, ``steps`` whole loop periods timed) and the same two modes:

* ``interleaved`` (CPU): inside each Trainer fit a callback runs plain steps on the same
  batch next to every Trainer step (after it on even, before it on odd batches), each on
  its own copy of the student, teacher and optimiser; the Trainer step's time is its loop
  period minus the plain steps. KD fits run a plain KD step; Fast-ARD fits a plain Fast-ARD
  batch (m replays) and m plain KD steps; ARD fits a plain ARD step. Ratios are medians of
  per-step paired ratios and (a) is chained from paired factors:
  ``(F_T / F_P) * (F_P / (m KD_P)) / (KD_T / KD_P)``.
* ``runs``: whole fits and plain runs alternated (ABBA), medians over ``--repeats``; the
  only mode for CUDA.

The plain loops reproduce the modules' ``training_step`` (read lightning_adv/modules/
distill.py) plus Lightning's optimisation, without metric updates, ``self.log`` or the loop:

* KD: teacher forward (no grad) on x; student forward on x; ``t^2 * KL / C``
  (element-wise mean, as the module's default and the authors' ``nn.KLDivLoss()``);
  ``zero_grad``, backward, ``SGD.step``.
* ARD: teacher forward on clean x; PGD-K on the student's CE (train mode, random start
  clamped to [0, 1], ``autograd.grad`` w.r.t. delta, sign step, projection, clamp); student
  forward at x_adv; the clean student forward (train mode, no grad at alpha = 1: the module
  always runs it, as the authors' code); the KL; backward; step.
* Fast-ARD: teacher forward once per batch; a persistent delta (zero at the start); m times:
  forward at clamp(x + delta), the KL, ``zero_grad``, backward (parameter and delta
  gradients together), ``delta <- proj(delta + eps * sign(grad))``, step ("ce": first one
  step of delta up the student's CE with ``autograd.grad``, then the ARD step at the moved
  point); then the module's no-grad eval-mode clean forward (``track_clean_acc``;
  ``--no-clean-acc`` removes it on both sides).

Where the time goes in (a): the module runs the teacher once per batch and reuses its
logits for the m replays (the input x it sees is clean and does not change), so per
parameter update Fast-ARD pays 1/m of KD's teacher forwards. With a teacher that costs
much more than a student step, Fast-ARD is then *faster* than KD. The script prints the
cost of each part (teacher forward, student step, ...) and the ratio those costs predict.

Defaults (CPU, about 3 minutes on 2 shared cores): student ``small_cnn`` width 16, teacher
``small_cnn`` width 32, 1x28x28 inputs, batch 32, 1 torch thread, m = 4, PGD-10 for ARD.

Examples::

    python benchmarks/bench_distill.py
    python benchmarks/bench_distill.py --replays 8 --skip-ard
    python benchmarks/bench_distill.py --device cuda --arch mobilenetv2 --teacher-arch wrn34_10 \\
        --image-size 32 --in-channels 3 --batch-size 128      # the table-4.10 pair, on a GPU

A benchmark, not a test: it never asserts on timings and exits 0 when a target is missed.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

_HERE = Path(__file__).resolve().parent
for _p in (str(_HERE.parent), str(_HERE)):  # the repo (package) and benchmarks/ (the AT benchmark)
    if _p not in sys.path:
        sys.path.insert(0, _p)

import lightning  # noqa: E402
import lightning.pytorch as pl  # noqa: E402

import bench_adv_training as bat  # noqa: E402  (timing machinery shared with the AT benchmark)
from lightning_adv.attacks import PGD  # noqa: E402
from lightning_adv.models import create_model  # noqa: E402
from lightning_adv.modules import KnowledgeDistillation, OptimConfig  # noqa: E402
from lightning_adv.objectives import ARD, KD, FastARD  # noqa: E402

TARGET_A = 1.05   # Fast-ARD / KD training time (thesis table 4.10: 5.15 h / 5.13 h = 1.004)
TARGET_B = 1.05   # ARD step, Trainer / plain
THESIS_A = {4: 5.15 / 5.13, 8: 5.10 / 5.13}


# --------------------------------------------------------------------------- options
def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="KD / ARD / Fast-ARD: Lightning vs plain PyTorch, Fast-ARD vs KD time.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--arch", default="small_cnn", help="student architecture")
    p.add_argument("--arch-kwargs", type=json.loads, default=None,
                   help='student kwargs (JSON); default {"width": 16} for small_cnn')
    p.add_argument("--teacher-arch", default="small_cnn")
    p.add_argument("--teacher-arch-kwargs", type=json.loads, default=None,
                   help='teacher kwargs (JSON); default {"width": 32} for small_cnn')
    p.add_argument("--image-size", type=int, default=28)
    p.add_argument("--in-channels", type=int, default=1)
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=None, help="default 128 on CUDA, 32 on CPU")
    p.add_argument("--steps", type=int, default=None, help="timed batches per fit; default 50 CUDA, 16 CPU")
    p.add_argument("--warmup", type=int, default=None, help="untimed batches per fit; default 10 CUDA, 2 CPU")
    p.add_argument("--repeats", type=int, default=None, help="fits per configuration; default 5")
    p.add_argument("--mode", choices=("runs", "interleaved"), default=None,
                   help="timing mode (module docstring); default interleaved on CPU, runs on CUDA")
    p.add_argument("--replays", type=int, default=4, help="m, Fast-ARD's replays per batch")
    p.add_argument("--pgd-steps", type=int, default=10, help="K, ARD's attack steps")
    p.add_argument("--eps", type=float, default=8 / 255)
    p.add_argument("--step-size", type=float, default=2 / 255, help="ARD's PGD step (Fast-ARD steps by eps)")
    p.add_argument("--temperature", type=float, default=30.0)
    p.add_argument("--no-clean-acc", action="store_true",
                   help="Fast-ARD track_clean_acc=False (and no clean eval forward in its plain loop)")
    p.add_argument("--skip-ce", action="store_true", help="skip the perturbation_loss='ce' Fast-ARD variant")
    p.add_argument("--skip-ard", action="store_true", help="skip (b), the ARD Trainer vs plain check")
    p.add_argument("--skip-fastard", action="store_true", help="skip (a), the Fast-ARD vs KD check")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None, help="torch threads; default 1 on CPU")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    return p.parse_args(argv)


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    dev = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
    args.device = torch.device("cpu" if dev == "auto" else dev)
    if args.device.type == "cuda" and args.device.index is None:
        args.device = torch.device("cuda", torch.cuda.current_device())
    cuda = args.device.type == "cuda"
    if args.arch_kwargs is None and args.arch == "small_cnn":
        args.arch_kwargs = {"width": 16}
    if args.teacher_arch_kwargs is None and args.teacher_arch == "small_cnn":
        args.teacher_arch_kwargs = {"width": 32}
    for name in ("arch_kwargs", "teacher_arch_kwargs"):
        kw = dict(getattr(args, name) or {})
        if (args.arch if name == "arch_kwargs" else args.teacher_arch) == "mlp":
            kw.setdefault("input_size", args.image_size)
        setattr(args, name, kw or None)
    args.batch_size = args.batch_size or (128 if cuda else 32)
    args.steps = args.steps or (50 if cuda else 16)
    args.warmup = args.warmup if args.warmup is not None else (10 if cuda else 2)
    args.repeats = args.repeats or 5
    args.mode = args.mode or ("runs" if cuda else "interleaved")
    if cuda and args.mode != "runs":
        raise SystemExit("--mode interleaved needs per-step device syncs: use --mode runs on CUDA")
    args.threads = args.threads or (torch.get_num_threads() if cuda else 1)
    if args.replays < 1 or args.steps < 1 or args.repeats < 1 or args.pgd_steps < 0:
        raise SystemExit("--replays, --steps, --repeats must be >= 1, --pgd-steps >= 0")
    args.track_clean_acc = not args.no_clean_acc
    # fields bench_adv_training's loader and timer read
    args.channels_last = False
    args.bf16 = False
    return args


# --------------------------------------------------------------------------- models
def make_teacher(args: argparse.Namespace) -> nn.Module:
    torch.manual_seed(args.seed + 100)
    return create_model(args.teacher_arch, num_classes=args.num_classes, in_channels=args.in_channels,
                        **(args.teacher_arch_kwargs or {})).eval().requires_grad_(False)


def make_module(args: argparse.Namespace, kind: str) -> pl.LightningModule:
    """kind: kd | ard | fastard_ard | fastard_ce; the teacher is given in memory (no file)."""
    common = dict(arch=args.arch, num_classes=args.num_classes, in_channels=args.in_channels,
                  arch_kwargs=args.arch_kwargs, optim=OptimConfig(), teacher_arch=args.teacher_arch,
                  teacher_arch_kwargs=args.teacher_arch_kwargs)
    kd = dict(temperature=args.temperature, alpha=1.0, kl_reduction="elementwise_mean")
    torch.manual_seed(args.seed)
    if kind == "kd":
        module = KnowledgeDistillation(**common, objective=KD(**kd))
    elif kind == "ard":
        module = KnowledgeDistillation(**common, objective=ARD(**kd, attack=PGD(
            eps=args.eps, steps=args.pgd_steps, step_size=args.step_size, random_start=True, bn_mode="train")))
    else:
        module = KnowledgeDistillation(**common, track_clean_acc=args.track_clean_acc, objective=FastARD(
            **kd, eps=args.eps, replays=args.replays, perturbation_loss=kind.split("_")[1]))
    module.set_teacher(make_teacher(args))
    return module


class Plain:
    """A student copy with the Trainer side's initial weights, its SGD, a teacher copy, and state."""

    def __init__(self, args: argparse.Namespace, kind: str) -> None:
        self.model = make_module(args, "kd").model.to(args.device).train()  # same seed: same weights
        cfg = OptimConfig()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                   weight_decay=cfg.weight_decay, nesterov=cfg.nesterov)
        self.teacher = make_teacher(args).to(args.device)
        self.delta: Optional[Tensor] = None
        self.step_fn = PLAIN_STEPS[kind]

    def __call__(self, model: Any, opt: Any, x: Tensor, y: Tensor, args: argparse.Namespace) -> None:
        self.step_fn(self, x, y, args)


def as_timer_entry(plain: Plain) -> tuple[nn.Module, torch.optim.Optimizer, Callable]:
    """The ``(model, opt, step)`` triple ``bat.WindowTimer`` calls as ``step(model, opt, x, y, args)``."""
    return plain.model, plain.opt, plain


# --------------------------------------------------------------------------- plain steps
def _kd_term(student_logits: Tensor, teacher_logits: Tensor, t: float) -> Tensor:
    """``t^2 * KL(softmax(T/t) || softmax(S/t))``, element-wise mean (sum / (B*C)), as the module."""
    p = F.softmax(teacher_logits.float() / t, dim=-1)
    log_q = F.log_softmax(student_logits.float() / t, dim=-1)
    kl = (p * (torch.log(p.clamp_min(1e-12)) - log_q)).sum(dim=-1).mean()
    return t * t * kl / student_logits.shape[-1]


def plain_kd(s: Plain, x: Tensor, y: Tensor, args: argparse.Namespace) -> None:
    with torch.no_grad():
        t_logits = s.teacher(x)
    loss = _kd_term(s.model(x), t_logits, args.temperature)
    s.opt.zero_grad(set_to_none=True)
    loss.backward()
    s.opt.step()


def plain_kd_m(s: Plain, x: Tensor, y: Tensor, args: argparse.Namespace) -> None:
    """m KD steps on the batch: the KD work of the m parameter updates of one Fast-ARD batch."""
    for _ in range(args.replays):
        plain_kd(s, x, y, args)


def plain_ard(s: Plain, x: Tensor, y: Tensor, args: argparse.Namespace) -> None:
    model, eps, alpha = s.model, args.eps, args.step_size
    with torch.no_grad():
        t_logits = s.teacher(x)
    model.train()
    delta = torch.empty_like(x).uniform_(-eps, eps)
    delta = (x + delta).clamp_(0.0, 1.0) - x
    for _ in range(args.pgd_steps):
        delta.requires_grad_(True)
        loss = F.cross_entropy(model(x + delta).float(), y, reduction="none")
        (grad,) = torch.autograd.grad(loss.sum(), delta)
        delta = (delta.detach() + alpha * grad.sign()).clamp(-eps, eps)
        delta = (x + delta).clamp_(0.0, 1.0) - x
    logits_adv = model((x + delta).detach())
    with torch.no_grad():
        model(x)  # the module's clean forward (train mode; in the gradient only when alpha < 1)
    loss = _kd_term(logits_adv, t_logits, args.temperature)
    s.opt.zero_grad(set_to_none=True)
    loss.backward()
    s.opt.step()


def _plain_fastard(s: Plain, x: Tensor, y: Tensor, args: argparse.Namespace, ce: bool) -> None:
    model, eps = s.model, args.eps
    with torch.no_grad():
        t_logits = s.teacher(x)  # once per batch, as the module
    if s.delta is None or s.delta.shape != x.shape:
        s.delta = torch.zeros_like(x)
    delta = s.delta
    for _ in range(args.replays):
        delta.requires_grad_(True)
        if ce:  # delta first ascends the student's CE (train mode), its own forward + input gradient
            ce_loss = F.cross_entropy(model((x + delta).clamp(0.0, 1.0)).float(), y, reduction="none").sum()
            (grad,) = torch.autograd.grad(ce_loss, delta)
            with torch.no_grad():
                delta = (delta.detach() + eps * grad.sign()).clamp(-eps, eps)
        loss = _kd_term(model((x + delta).clamp(0.0, 1.0)), t_logits, args.temperature)
        s.opt.zero_grad(set_to_none=True)
        loss.backward()
        if not ce:  # the same backward gave delta's gradient
            with torch.no_grad():
                delta = (delta.detach() + eps * delta.grad.sign()).clamp(-eps, eps)
        s.opt.step()
    s.delta = delta.detach()
    if args.track_clean_acc:
        with torch.no_grad():
            model.eval()
            model(x)
            model.train()


def plain_fastard_ard(s: Plain, x: Tensor, y: Tensor, args: argparse.Namespace) -> None:
    _plain_fastard(s, x, y, args, ce=False)


def plain_fastard_ce(s: Plain, x: Tensor, y: Tensor, args: argparse.Namespace) -> None:
    _plain_fastard(s, x, y, args, ce=True)


PLAIN_STEPS: dict[str, Callable] = {"kd": plain_kd, "kd_m": plain_kd_m, "ard": plain_ard,
                                    "fastard_ard": plain_fastard_ard, "fastard_ce": plain_fastard_ce}
# plain steps interleaved with each kind of Trainer fit
INTERLEAVE = {"kd": ["kd"], "ard": ["ard"], "fastard_ard": ["fastard_ard", "kd_m"],
              "fastard_ce": ["fastard_ce", "kd_m"]}


# --------------------------------------------------------------------------- runs
def run_trainer(args: argparse.Namespace, kind: str, loader: DataLoader, interleave: bool) -> dict:
    module = make_module(args, kind)
    plain = {k: as_timer_entry(Plain(args, k)) for k in INTERLEAVE[kind]} if interleave else None
    timer = bat.WindowTimer(args, plain)
    cuda = args.device.type == "cuda"
    trainer = pl.Trainer(
        accelerator="gpu" if cuda else "cpu", devices=[args.device.index] if cuda else 1, precision="32-true",
        max_epochs=1,  # one pass over the warmup + steps + 1 batches (Fast-ARD steps m times per batch)
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, limit_val_batches=0, benchmark=True if cuda else None, callbacks=[timer],
    )
    torch.manual_seed(args.seed + 1)
    trainer.fit(module, train_dataloaders=loader)
    if timer.threads != args.threads:
        print(f"WARNING: torch threads inside the Trainer = {timer.threads}, expected {args.threads}",
              file=sys.stderr)
    periods = [b - a for a, b in zip(timer.stamps, timer.stamps[1:])]
    out: dict = {"mean_s": (timer.stamps[-1] - timer.stamps[0]) / args.steps}
    if interleave:
        plain_total = [sum(ts) for ts in zip(*timer.plain_s.values())]
        out["trainer_step_s"] = [p - q for p, q in zip(periods, plain_total)]
        out["plain_step_s"] = timer.plain_s
    return out


def run_plain(args: argparse.Namespace, kind: str, loader: DataLoader) -> dict:
    plain = Plain(args, kind)
    start, end = args.warmup, args.warmup + args.steps
    stamps: list[float] = []
    torch.manual_seed(args.seed + 1)
    for i, (x, y) in enumerate(loader):
        if i in (start, end):
            bat.sync(args.device)
        if start <= i <= end:
            stamps.append(time.perf_counter())
        plain(None, None, x, y, args)
    return {"mean_s": (stamps[-1] - stamps[0]) / args.steps}


def part_costs(args: argparse.Namespace, loader: DataLoader, n: int = 9) -> dict[str, float]:
    """Median cost (s) of the pieces, for the cost model of (a)."""
    plain = Plain(args, "kd")
    model, teacher = plain.model, plain.teacher
    x, y = next(iter(loader))

    def timed(fn: Callable[[], Any]) -> float:
        fn()
        ts = []
        for _ in range(n):
            bat.sync(args.device)
            t = time.perf_counter()
            fn()
            bat.sync(args.device)
            ts.append(time.perf_counter() - t)
        return bat.median(ts)

    def student_step() -> None:
        d = torch.zeros_like(x, requires_grad=True)
        model(x + d).sum().backward()

    def ce_ascent() -> None:
        d = torch.zeros_like(x, requires_grad=True)
        torch.autograd.grad(F.cross_entropy(model(x + d), y), d)

    with torch.no_grad():
        teacher_fwd = timed(lambda: teacher(x))
        model.eval()
        student_fwd = timed(lambda: model(x))
        model.train()
    return {"teacher_forward": teacher_fwd, "student_forward": student_fwd,
            "student_step_with_input_grad": timed(student_step), "student_ce_ascent": timed(ce_ascent)}


# --------------------------------------------------------------------------- main
def main(argv: Optional[list[str]] = None) -> int:
    args = resolve(parse_args(argv))
    cuda = bat.configure_runtime(args)
    m = args.replays
    dev_name = torch.cuda.get_device_name(args.device) if cuda else (platform.processor() or platform.machine())
    print(f"torch {torch.__version__} | lightning {lightning.__version__} | python {platform.python_version()}\n"
          f"device {args.device} ({dev_name}), torch threads {args.threads}\n"
          f"student {args.arch} {json.dumps(args.arch_kwargs)}, teacher {args.teacher_arch} "
          f"{json.dumps(args.teacher_arch_kwargs)}, input {args.in_channels}x{args.image_size}x{args.image_size}, "
          f"batch {args.batch_size}, t {args.temperature:g}, alpha 1, KL element-wise mean\n"
          f"Fast-ARD m={m}, step eps={args.eps * 255:g}/255, track_clean_acc {args.track_clean_acc}; "
          f"ARD PGD-{args.pgd_steps} step {args.step_size * 255:g}/255 random start, bn_mode train\n"
          f"{args.steps} timed + {args.warmup} warm-up batches per fit, {args.repeats} repeats, mode {args.mode}",
          flush=True)

    loader = bat.make_loader(args)
    kinds = ([] if args.skip_fastard else ["kd", "fastard_ard"] + ([] if args.skip_ce else ["fastard_ce"])) \
        + ([] if args.skip_ard else ["ard"])
    t0 = time.perf_counter()
    costs = part_costs(args, loader)
    print("\npart costs (ms, median): " + ", ".join(f"{k} {v * 1e3:.2f}" for k, v in costs.items()), flush=True)

    step: dict[str, list[float]] = {}
    if args.mode == "interleaved":
        print("\n[interleaved] plain steps next to every Trainer step, same batch; per-fit medians, ms per batch")
        for r in range(args.repeats):
            for kind in kinds:
                res = run_trainer(args, kind, loader, interleave=True)
                step.setdefault(f"{kind}_trainer", []).extend(res["trainer_step_s"])
                line = f"  repeat {r + 1}/{args.repeats} {kind:<12} Trainer {bat.median(res['trainer_step_s']) * 1e3:9.2f}"
                for pk, ts in res["plain_step_s"].items():
                    step.setdefault(f"{kind}_fit_plain_{pk}", []).extend(ts)
                    line += f"   plain {pk} {bat.median(ts) * 1e3:9.2f}"
                print(line, flush=True)
    else:
        print("\n[runs] whole fits / plain runs, ABBA order; ms per batch over the window")
        for r in range(args.repeats):
            for kind in kinds:
                sides = ["trainer", "plain"] if kind == "ard" else ["trainer"]
                for side in (sides if r % 2 == 0 else sides[::-1]):
                    res = run_trainer(args, kind, loader, False) if side == "trainer" else run_plain(args, kind, loader)
                    step.setdefault(f"{kind}_{side}", []).append(res["mean_s"])
                    print(f"  repeat {r + 1}/{args.repeats} {kind:<12} {side:<7} {res['mean_s'] * 1e3:9.2f}", flush=True)
    elapsed = time.perf_counter() - t0
    med = {k: bat.median(v) for k, v in step.items()}
    paired = args.mode == "interleaved"

    # ------------------------------------------------------------------ ratios
    results: dict[str, Any] = {"mode": args.mode, "median_s": med, "costs_s": costs}
    checks = []
    if not args.skip_fastard:
        kd_tp = bat._ratio(step["kd_trainer"], step["kd_fit_plain_kd"], paired=True, use_paired=True) if paired \
            else None
        for var in ["ard"] + ([] if args.skip_ce else ["ce"]):
            k = f"fastard_{var}"
            direct = med[f"{k}_trainer"] / (m * med["kd_trainer"])
            entry = {"direct": direct}
            if paired:
                f_tp = bat._ratio(step[f"{k}_trainer"], step[f"{k}_fit_plain_{k}"], paired=True, use_paired=True)
                f_kd = bat._ratio(step[f"{k}_fit_plain_{k}"], step[f"{k}_fit_plain_kd_m"], paired=True,
                                  use_paired=True)
                entry.update(trainer_over_plain=f_tp, plain_over_m_kd=f_kd,
                             ratio=f_tp["ratio"] * f_kd["ratio"] / kd_tp["ratio"])
            else:
                entry["ratio"] = direct
            results[f"a_{var}"] = entry
            checks.append((f"a_{var}", f"(a) Fast-ARD ({var}) m={m} / KD, per update", TARGET_A if var == "ard" else None,
                           entry))
        if paired:
            results["kd_trainer_over_plain"] = kd_tp
            checks.append(("kd_tp", "    KD step: Trainer / plain", None, {"ratio": kd_tp["ratio"], **kd_tp}))
    if not args.skip_ard:
        if paired:
            b = bat._ratio(step["ard_trainer"], step["ard_fit_plain_ard"], paired=True, use_paired=True)
        else:
            b = bat._ratio(step["ard_trainer"], step["ard_plain"], paired=True)
        results["b"] = b
        checks.append(("b", f"(b) ARD PGD-{args.pgd_steps} step: Trainer / plain", TARGET_B, b))

    # ------------------------------------------------------------------ report
    labels = {"kd_trainer": "KD, Trainer", "fastard_ard_trainer": f"Fast-ARD ard m={m}, Trainer (per batch)",
              "fastard_ce_trainer": f"Fast-ARD ce m={m}, Trainer (per batch)", "ard_trainer": "ARD, Trainer",
              "ard_plain": "ARD, plain", "kd_fit_plain_kd": "KD, plain",
              "fastard_ard_fit_plain_fastard_ard": f"Fast-ARD ard m={m}, plain (per batch)",
              "fastard_ce_fit_plain_fastard_ce": f"Fast-ARD ce m={m}, plain (per batch)",
              "ard_fit_plain_ard": "ARD, plain"}
    print(f"\n{'configuration':<44}{'ms/batch':>12}{'updates/s':>12}")
    for key, name in labels.items():
        if key in med:
            ups = (m if "fastard" in key else 1) / med[key]
            print(f"{name:<44}{med[key] * 1e3:>12.2f}{ups:>12.2f}")
    c = costs
    s_step, t_fwd, s_fwd, asc = (c["student_step_with_input_grad"], c["teacher_forward"], c["student_forward"],
                                 c["student_ce_ascent"])
    clean = s_fwd if args.track_clean_acc else 0.0
    model_ard = (m * s_step + t_fwd + clean) / (m * (s_step + t_fwd))
    model_ce = (m * (s_step + asc) + t_fwd + clean) / (m * (s_step + t_fwd))
    model_teacher_per_replay = (m * (s_step + t_fwd) + clean) / (m * (s_step + t_fwd))
    print(f"\ncost model of (a), from the part costs: ard {model_ard:.3f}, ce {model_ce:.3f}; with the teacher "
          f"re-run on every replay the ard variant would be {model_teacher_per_replay:.3f}")
    results["cost_model"] = {"ard": model_ard, "ce": model_ce, "ard_teacher_every_replay": model_teacher_per_replay}

    print(f"\n{'check':<46}{'ratio':>9}{'paired med [min, max]':>28}{'direct':>9}{'target':>10}{'result':>8}")
    verdicts = {}
    for key, name, tgt, e in checks:
        pr = e.get("trainer_over_plain") if key.startswith("a_") else e
        rng = (f"{pr['paired_median']:.3f} [{pr['paired_min']:.3f}, {pr['paired_max']:.3f}]"
               if pr and "paired_median" in pr else "-")
        direct = f"{e['direct']:.3f}" if "direct" in e else "-"
        res = "" if tgt is None else ("PASS" if e["ratio"] <= tgt else "MISS")
        if tgt is not None:
            verdicts[key] = {"ratio": e["ratio"], "target": tgt, "result": res}
        print(f"{name:<46}{e['ratio']:>9.3f}{rng:>28}{direct:>9}{('<= %.2f' % tgt) if tgt else '(info)':>10}{res:>8}")
    if not args.skip_fastard:
        print(f"(a) ratio = time per Fast-ARD batch / (m x time per KD batch) = Fast-ARD run of 200/m epochs / KD run "
              f"of 200 epochs; thesis table 4.10: {THESIS_A.get(m, float('nan')):.3f} for m={m}.")
        if paired:
            print("    interleaved: chained paired medians (F_T/F_P) x (F_P/(m KD_P)) / (KD_T/KD_P); 'paired' column: "
                  "Fast-ARD Trainer/plain; 'direct': ratio of the Trainer medians of separate fits (unpaired).")
    print(f"Timing took {elapsed:.0f} s. torch {torch.__version__}, lightning {lightning.__version__}, "
          f"device {args.device} ({dev_name}), threads {args.threads}")

    if args.json is not None:
        payload = {"versions": {"torch": torch.__version__, "lightning": lightning.__version__,
                                "python": platform.python_version()},
                   "device": str(args.device), "device_name": dev_name,
                   "command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
                   "config": {k: (str(v) if isinstance(v, (torch.device, Path)) else v) for k, v in vars(args).items()},
                   "step_s": step, "results": results, "verdicts": verdicts, "timing_s": elapsed}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2, default=float))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
