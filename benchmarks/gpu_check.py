#!/usr/bin/env python
"""Every GPU-only check of lightning-adv in one run, one table (run through ``gpu_check.sh``).

Rows (docs/precision.md, benchmarks/README.md):

* ``at_fp32``, ``at_bf16``: PGD-10 AT step, Trainer + AdvTraining vs a plain PyTorch loop
  (``bench_adv_training.py``, ABBA runs), fp32 and ``bf16-mixed``; the ratio is reported.
* ``channels_last``, ``compile``: the module options ``compute.memory_format`` and
  ``compute.compile``, Trainer AT step time against the bf16 contiguous eager row; and a
  correctness check: logits and input gradients of the converted / compiled backbone equal
  the eager contiguous ones (TF32 off for the comparison).
* ``ddp_fit``: ``train.py fit`` with ``strategy=ddp, devices=1`` finishes, writes a checkpoint
  that ``torch.load(weights_only=True)`` reads.
* ``attack_bf16``, ``attack_fp16``: robust accuracy of one trained model under PGD-20 with the
  suite run under bf16 / fp16 autocast vs fp32 (within 1 point); ``eval_default_fp32``: the
  evaluator's default inside a bf16 autocast block gives exactly the fp32 numbers.

Timings are reported, never asserted (a shared or throttled GPU is slow, not wrong). A row
FAILs when its run raises or its check does not hold; any FAIL makes the exit status 1 and is
named under the table. ``--dry-run`` runs the same code paths on CPU with tiny sizes
(``compile`` with ``aot_eager`` there, inductor being slow on CPU; ``ddp_fit`` calls train.py's
``cli_main`` in this process rather than in a fresh interpreter); tests/test_gpu_check.py runs it.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
for p in (str(ROOT), str(ROOT / "benchmarks")):
    if p not in sys.path:
        sys.path.insert(0, p)

import bench_adv_training as bench  # noqa: E402

from lightning_adv.attacks import PGD, AttackSuite  # noqa: E402
from lightning_adv.models import create_model  # noqa: E402
from lightning_adv.modules.compute import ComputeConfig  # noqa: E402

Row = dict[str, Any]


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="lightning-adv GPU checks: one table, non-zero exit on a failed row")
    p.add_argument("--dry-run", action="store_true", help="CPU smoke mode: the same code paths, tiny sizes")
    p.add_argument("--only", default=None, help="comma-separated row names to run (default: all)")
    return p.parse_args(argv)


def sizes(dry: bool) -> dict[str, Any]:
    """Bench arguments and data sizes: resnet18 batch 128 on the GPU, a small_cnn on 3x8x8 in the dry run."""
    if dry:
        return dict(device="cpu", bench=["--device", "cpu", "--arch", "small_cnn", "--in-channels", "3",
                                         "--image-size", "8", "--arch-kwargs", '{"width": 4}', "--batch-size", "8",
                                         "--steps", "2", "--warmup", "1", "--repeats", "1", "--pgd-steps", "2",
                                         "--mode", "runs", "--threads", "1"],
                    compile_repeats=["--repeats", "1"], backend="aot_eager", arch="small_cnn",
                    arch_kwargs={"width": 4}, shape=(3, 8, 8), batch=8, n_eval=400, pgd_steps=5, epochs=4)
    return dict(device="cuda", bench=["--device", "cuda", "--arch", "resnet18", "--batch-size", "128", "--steps",
                                      "30", "--warmup", "10", "--repeats", "3", "--mode", "runs"],
                compile_repeats=["--repeats", "2"], backend="inductor", arch="resnet18", arch_kwargs={},
                shape=(3, 32, 32), batch=64, n_eval=797, pgd_steps=20, epochs=12)


# --------------------------------------------------------------------------- AT step rows
def run_bench(cfg: dict[str, Any], extra: list[str]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.json"
        bench.main(cfg["bench"] + ["--skip-natural", "--json", str(out)] + extra)
        return json.loads(out.read_text())


def at_row(cfg: dict[str, Any], extra: list[str], store: dict[str, float], key: str) -> tuple[str, str, bool]:
    res = run_bench(cfg, extra)["results"]["runs"]
    trainer, plain = res["median_s"]["at_trainer"], res["median_s"]["at_plain"]
    ratio = res["ratios"]["a"]["ratio"]
    store[key] = trainer
    ok = all(math.isfinite(v) and v > 0 for v in (trainer, plain, ratio))
    verdict = "meets" if ratio <= bench.RATIO_A_TARGET else "misses"
    return (f"Trainer/plain {ratio:.3f}", f"{trainer * 1e3:.2f} vs {plain * 1e3:.2f} ms/step; {verdict} the "
            f"{bench.RATIO_A_TARGET} target", ok)


def _agree(cfg: dict[str, Any], compute: ComputeConfig) -> float:
    """Largest relative difference of logits and input gradients, converted/compiled vs eager contiguous."""
    dev = torch.device(cfg["device"])
    torch.manual_seed(0)
    ref = create_model(cfg["arch"], num_classes=10, in_channels=3, **cfg["arch_kwargs"]).to(dev).eval()
    other = create_model(cfg["arch"], num_classes=10, in_channels=3, **cfg["arch_kwargs"]).to(dev).eval()
    other.load_state_dict(ref.state_dict())
    compute.apply(other)
    x = torch.rand(cfg["batch"], *cfg["shape"], device=dev)
    y = torch.randint(0, 10, (cfg["batch"],), device=dev)
    tf32 = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        worst = 0.0
        for _attempt in range(2):  # the second call runs the compiled graph from the cache
            outs = []
            for model in (ref, other):
                xg = x.clone().requires_grad_(True)
                logits = model(xg)
                (g,) = torch.autograd.grad(F.cross_entropy(logits, y), xg)
                outs.append((logits.detach(), g))
            for a, b in zip(outs[0], outs[1]):
                worst = max(worst, float((a - b).abs().max() / a.abs().max().clamp_min(1e-12)))
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    return worst


def _loud_recompile_limit() -> None:
    """A compiled run that hits Dynamo's recompile limit falls back to eager silently: make it an error
    (the row then FAILs instead of timing eager code), with room for the graphs of several module copies."""
    import torch._dynamo.config as dyn

    for name, value in (("recompile_limit", 64), ("cache_size_limit", 64), ("fail_on_recompile_limit_hit", True),
                        ("fail_on_cache_limit_hit", True)):
        if hasattr(dyn, name):
            setattr(dyn, name, value)


def option_row(cfg: dict[str, Any], extra: list[str], compute: ComputeConfig, store: dict[str, float],
               name: str) -> tuple[str, str, bool]:
    if compute.compile:
        _loud_recompile_limit()
    diff = _agree(cfg, compute)
    res = run_bench(cfg, ["--bf16"] + extra)["results"]["runs"]
    on, off = res["median_s"]["at_trainer"], store.get("at_bf16", float("nan"))
    ok = diff <= 1e-3 and math.isfinite(on)
    return (f"on/off {on / off:.3f}", f"{on * 1e3:.2f} vs {off * 1e3:.2f} ms/step (bf16 AT, Trainer); "
            f"outputs and input gradients vs eager: max rel diff {diff:.1e} (<= 1e-3)", ok)


# --------------------------------------------------------------------------- DDP fit
def _fit_here(args: list[str]) -> tuple[int, str]:
    """``python train.py *args`` in this process (the dry run: a fresh interpreter's imports cost more than the
    tiny fit): train.py's ``cli_main()`` with ``sys.argv`` set as train.py would see it. The exit status and what
    it wrote to stderr; ``sys.argv`` and the environment that Lightning's DDP launcher sets (MASTER_ADDR, ranks)
    are restored afterwards (``cli_main`` closes the process group)."""
    import contextlib
    import io

    from lightning_adv.cli import cli_main

    argv, env, err = list(sys.argv), dict(os.environ), io.StringIO()
    sys.argv = [str(ROOT / "train.py"), *args]
    try:
        with contextlib.redirect_stderr(err):
            cli_main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        sys.argv = argv
        os.environ.clear()
        os.environ.update(env)
    sys.stderr.write(err.getvalue())
    return code, err.getvalue()


def ddp_row(cfg: dict[str, Any]) -> tuple[str, str, bool]:
    """``train.py fit`` with DDP on one device: a fresh interpreter on the GPU; in the dry run train.py's
    ``cli_main`` in this process (the same CLI, Trainer, DDPStrategy, gloo process group and checkpoint)."""
    dry = cfg["device"] == "cpu"
    with tempfile.TemporaryDirectory() as tmp:
        args = ["fit", "--config", str(ROOT / "configs" / "quickstart.yaml"),
                "--trainer.strategy", "ddp", "--trainer.devices", "1",
                "--trainer.accelerator", "cpu" if dry else "gpu", "--trainer.max_epochs", "1" if dry else "2",
                "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
                "--trainer.default_root_dir", tmp]
        if dry:
            args += ["--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
                     "--trainer.num_sanity_val_steps", "0"]
        t0 = time.perf_counter()
        if dry:
            code, output = _fit_here(args)
        else:
            proc = subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT, capture_output=True,
                                  text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
            code, output = proc.returncode, proc.stderr or proc.stdout
        ckpt = Path(tmp) / "checkpoints" / "last.ckpt"
        if code != 0 or not ckpt.exists():
            tail = output.strip().splitlines()[-1:] or ["no output"]
            return "failed", f"exit {code}, checkpoint {'written' if ckpt.exists() else 'missing'}: " \
                             f"{tail[0][:150]}", False
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        return "finished", f"{time.perf_counter() - t0:.0f} s, {ckpt.name} read with weights_only=True " \
                           f"({len(state['state_dict'])} tensors)", True


# --------------------------------------------------------------------------- attacks under AMP
def digits_model(cfg: dict[str, Any]) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """small_cnn trained naturally on 1000 scikit-learn digits; the other 797 are the evaluation set."""
    from sklearn.datasets import load_digits

    dev = torch.device(cfg["device"])
    torch.manual_seed(0)
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target)
    perm = torch.randperm(len(y))
    x, y = x[perm].to(dev), y[perm].to(dev)
    model = create_model("small_cnn", num_classes=10, in_channels=1, width=16).to(dev)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(cfg["epochs"]):
        order = torch.randperm(1000, device=dev)
        for i in range(0, 1000, 50):
            idx = order[i:i + 50]
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval(), x[1000:1000 + cfg["n_eval"]], y[1000:1000 + cfg["n_eval"]]


def robust_acc(cfg: dict[str, Any], data: tuple, precision: str, dtype: Optional[torch.dtype]) -> float:
    model, x, y = data
    torch.manual_seed(1)
    steps = cfg["pgd_steps"]
    suite = AttackSuite([PGD(eps=0.05, steps=steps, step_size=2.5 * 0.05 / steps, name="pgd")],
                        sanity_checks=False, precision=precision)
    with torch.autocast(x.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        report, _ = suite.evaluate(model, x, y, batch_size=400, warn=False)
    return report.worst_case_acc


def attack_row(cfg: dict[str, Any], data: tuple, dtype: torch.dtype) -> tuple[str, str, bool]:
    ref = robust_acc(cfg, data, "autocast", None)
    amp = robust_acc(cfg, data, "autocast", dtype)
    ok = abs(amp - ref) <= 0.01 and 0 < ref
    name = str(dtype).replace("torch.", "")
    return (f"{(amp - ref) * 100:+.2f} pt", f"PGD-{cfg['pgd_steps']} eps 0.05 on {data[1].shape[0]} digits: "
            f"{name} {amp:.2%} vs fp32 {ref:.2%} (|diff| <= 1 pt)", ok)


def eval_default_row(cfg: dict[str, Any], data: tuple) -> tuple[str, str, bool]:
    ref = robust_acc(cfg, data, "autocast", None)
    default = robust_acc(cfg, data, "fp32", torch.bfloat16)
    return (f"{default:.2%}", f"AttackSuite() inside bf16 autocast {default:.2%} vs fp32 {ref:.2%} (must be equal)",
            default == ref)


# --------------------------------------------------------------------------- main
def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_check: no CUDA device (torch.cuda.is_available() is False); run it on a GPU, or use --dry-run",
              file=sys.stderr)
        return 2
    cfg = sizes(args.dry_run)
    store: dict[str, float] = {}
    data: dict[str, Any] = {}

    def amp_data() -> tuple:
        if "digits" not in data:
            data["digits"] = digits_model(cfg)
        return data["digits"]

    cl, comp = ["--channels-last"], ["--compile", "--compile-backend", cfg["backend"]] + cfg["compile_repeats"]
    checks: list[tuple[str, Callable[[], tuple[str, str, bool]]]] = [
        ("at_fp32", lambda: at_row(cfg, [], store, "at_fp32")),
        ("at_bf16", lambda: at_row(cfg, ["--bf16"], store, "at_bf16")),
        ("channels_last", lambda: option_row(cfg, cl, ComputeConfig(memory_format="channels_last"), store, "cl")),
        ("compile", lambda: option_row(cfg, comp, ComputeConfig(compile=True, compile_backend=cfg["backend"]),
                                       store, "compile")),
        ("ddp_fit", lambda: ddp_row(cfg)),
        ("attack_bf16", lambda: attack_row(cfg, amp_data(), torch.bfloat16)),
        ("attack_fp16", lambda: attack_row(cfg, amp_data(), torch.float16)),
        ("eval_default_fp32", lambda: eval_default_row(cfg, amp_data())),
    ]
    only = set(args.only.split(",")) if args.only else None
    rows: list[Row] = []
    t_all = time.perf_counter()
    for name, fn in checks:
        if only is not None and name not in only:
            continue
        t0 = time.perf_counter()
        try:
            value, detail, ok = fn()
        except Exception as err:  # one failed row must not hide the others
            traceback.print_exc()
            value, detail, ok = "error", f"{type(err).__name__}: {str(err).splitlines()[0][:150] if str(err) else ''}", False
        rows.append(dict(check=name, value=value, detail=detail, status="PASS" if ok else "FAIL",
                         seconds=time.perf_counter() - t0))
        print(f"[gpu_check] {name}: {'PASS' if ok else 'FAIL'} ({time.perf_counter() - t0:.0f} s)", flush=True)
    print_table(rows, args.dry_run, time.perf_counter() - t_all)
    failed = [r["check"] for r in rows if r["status"] == "FAIL"]
    if failed:
        print(f"gpu_check: FAILED rows: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def print_table(rows: list[Row], dry: bool, total: float) -> None:
    dev = "CPU DRY RUN (tiny sizes; not GPU numbers)" if dry else torch.cuda.get_device_name(0)
    import lightning

    print(f"\n## gpu_check: {dev} | torch {torch.__version__} | lightning {lightning.__version__} | {total:.0f} s")
    print("| check | result | status | s | detail |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['check']} | {r['value']} | {r['status']} | {r['seconds']:.0f} | {r['detail']} |")


if __name__ == "__main__":
    sys.exit(main())
