"""Chapter-6 analysis: empirical NTK (layer-by-layer and torch.func vmap vs a per-example loop), conv
singular values (2-D FFT vs SVD of the explicit matrix), and Hessian-vector products needed for 1% on
lambda_max.

    python benchmarks/bench_analysis.py                    # CPU, 1 thread, about a minute
    python benchmarks/bench_analysis.py --device cuda --threads 8
    python benchmarks/bench_analysis.py --ntk-only --ntk-arch mlp2 --ntk-width 256   # the sweep's MLP family
    python benchmarks/bench_analysis.py --sweep-cost       # one NTK snapshot per family and width of the sweep

Prints timings and ratios; never asserts on them.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lightning_adv.analysis import (  # noqa: E402
    DatasetHessian,
    conv_operator_matrix,
    conv_singular_values,
    empirical_ntk,
    empirical_ntk_loop,
    lanczos,
    power_iteration,
)
from lightning_adv.analysis.ntk_layerwise import supported  # noqa: E402
from lightning_adv.models import create_model  # noqa: E402


def timed(fn: Callable[[], object], repeats: int, device: torch.device) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def ntk_model(arch: str, width: int) -> torch.nn.Module:
    """The architectures of the chapter-6 sweep (scripts/ntk_width_sweep.py) on CIFAR-shaped inputs."""
    if arch in ("mlp2", "mlp4"):
        return create_model("mlp", num_classes=10, in_channels=3, input_size=32,
                            hidden=[width] * (1 if arch == "mlp2" else 3))
    if arch == "wideresnet":
        return create_model("wideresnet", num_classes=10, in_channels=3, depth=10, widen_factor=width)
    return create_model(arch, num_classes=10, in_channels=3, width=width)


def bench_ntk(args: argparse.Namespace, arch: str, width: int, loop: bool = True) -> dict:
    """Time the kernel of ``N`` images three ways (layerwise, vmap, loop); the loop is the reference."""
    torch.manual_seed(0)
    model = ntk_model(arch, width).to(args.device).eval()
    x = torch.rand(args.ntk_samples, 3, 32, 32, device=args.device)
    n_params = sum(p.numel() for p in model.parameters())
    empirical_ntk(model, x[:2])  # warm-up
    t_new, k_new = timed(lambda: empirical_ntk(model, x, method="auto"), args.repeats, args.device)
    t_vmap, k_vmap = timed(lambda: empirical_ntk(model, x, method="vmap"), args.repeats, args.device)
    line = (f"NTK  {arch} width {width} ({n_params / 1e3:.0f}k params), N={args.ntk_samples} images x 10 classes: "
            f"default ({'layerwise' if supported(model) else 'vmap'}) {t_new * 1e3:.0f} ms, torch.func vmap "
            f"{t_vmap * 1e3:.0f} ms")
    out = {"arch": arch, "width": width, "params": n_params, "default_s": t_new, "vmap_s": t_vmap}
    ref = k_vmap
    if loop:
        t_loop, ref = timed(lambda: empirical_ntk_loop(model, x), 1, args.device)
        out["loop_s"] = t_loop
        line += (f", per-example loop {t_loop * 1e3:.0f} ms -> default x{t_loop / t_new:.1f}, vmap "
                 f"x{t_loop / t_vmap:.1f} the loop")
    err = max(float((k - ref).abs().max() / ref.abs().max()) for k in (k_new, k_vmap))
    print(f"{line} (max rel. diff {err:.1e})", flush=True)
    return out


def bench_sweep_cost(args: argparse.Namespace) -> None:
    """One NTKSnapshot (N images) per family and width of the sweep's defaults, default vs vmap."""
    total = {"default_s": 0.0, "vmap_s": 0.0}
    for arch, widths in (("mlp2", (16, 64, 256)), ("convnet6", (4, 8, 16)), ("wideresnet", (1, 2))):
        for w in widths:
            r = bench_ntk(args, arch, w, loop=False)
            total["default_s"] += r["default_s"]
            total["vmap_s"] += r["vmap_s"]
    print(f"one snapshot of every run above: default {total['default_s']:.1f} s, vmap {total['vmap_s']:.1f} s "
          f"(a sweep run takes max_epochs + 1 snapshots)")


def bench_conv_svd(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    n, c = args.conv_n, args.conv_channels
    w = torch.randn(c, c, 3, 3, device=args.device) / 3
    t_fft, s_fft = timed(lambda: conv_singular_values(w, n), args.repeats, args.device)
    t_svd, s_svd = timed(lambda: torch.linalg.svdvals(conv_operator_matrix(w, n)), 1, args.device)
    a = torch.sort(s_fft, descending=True).values
    b = s_svd[: a.numel()]
    print(f"conv singular values, {c}->{c} channels 3x3 over {n}x{n} ({c * n * n}x{c * n * n} operator): "
          f"FFT {t_fft * 1e3:.1f} ms, explicit-matrix SVD {t_svd * 1e3:.0f} ms -> speed-up x{t_svd / t_fft:.0f} "
          f"(max abs diff {float((a - b).abs().max()):.1e})")


def bench_hvp(args: argparse.Namespace) -> None:
    from lightning_adv.datamodules import DigitsDataModule

    torch.manual_seed(0)
    dm = DigitsDataModule(val_size=0.1)
    dm.setup("fit")
    xs, ys = zip(*(dm.train_dataset[i] for i in range(len(dm.train_dataset))))
    x, y = torch.stack(xs).to(args.device), torch.tensor(ys, device=args.device)
    model = create_model("mlp", input_size=8, num_classes=10, hidden=[64, 64]).to(args.device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for label, steps in (("at init", 0), ("after 200 SGD steps", 200)):
        for _ in range(steps):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
        op = DatasetHessian(model, [(x, y)])
        ritz, _ = lanczos(op.hvp, op.dim, iterations=120)
        ref = float(ritz[-1])
        need_l = next((k for k in range(1, 121) if abs(float(lanczos(op.hvp, op.dim, k)[0][-1]) - ref) <= 0.01 * abs(ref)), None)
        need_p = next((k for k in range(1, 2001) if abs(power_iteration(op.hvp, op.dim, k, tol=0.0)[0] - ref)
                       <= 0.01 * abs(ref)), None) if not args.skip_power else None
        print(f"Hessian lambda_max of MLP 64-64-64-10 on digits ({op.dim} params, {len(y)} examples) {label}: "
              f"{ref:.4f}; HVPs to 1%: Lanczos {need_l}, power iteration {need_p}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--ntk-arch", default="convnet6", choices=["convnet6", "small_cnn", "wideresnet", "mlp2", "mlp4"])
    p.add_argument("--ntk-width", type=int, default=8)
    p.add_argument("--ntk-samples", type=int, default=25)
    p.add_argument("--conv-n", type=int, default=16)
    p.add_argument("--conv-channels", type=int, default=16)
    p.add_argument("--skip-power", action="store_true")
    p.add_argument("--ntk-only", action="store_true", help="only the NTK comparison")
    p.add_argument("--sweep-cost", action="store_true", help="only one NTK snapshot per family/width of the sweep")
    args = p.parse_args()
    args.device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, device {args.device}, threads {args.threads}", flush=True)
    if args.sweep_cost:
        bench_sweep_cost(args)
        return 0
    bench_ntk(args, args.ntk_arch, args.ntk_width)
    if args.ntk_only:
        return 0
    bench_conv_svd(args)
    bench_hvp(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
