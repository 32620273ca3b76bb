"""Chapter-6 analysis: empirical NTK (layer-by-layer, optionally torch.func vmap, vs a per-example loop), conv
singular values (2-D FFT vs SVD of the explicit matrix), and Hessian-vector products needed for 1% on
lambda_max.

    python benchmarks/bench_analysis.py                    # CPU, 1 thread, about a minute
    python benchmarks/bench_analysis.py --device cuda --threads 8
    python benchmarks/bench_analysis.py --ntk-only --ntk-family ch6   # every chapter-6 NTK config's model
    python benchmarks/bench_analysis.py --ntk-only --ntk-family mlp2 --ntk-width 1024 --vmap
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

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "scripts")]

from lightning_adv.analysis import (  # noqa: E402
    DatasetHessian,
    conv_operator_matrix,
    conv_singular_values,
    empirical_ntk,
    empirical_ntk_loop,
    lanczos,
    power_iteration,
)
from lightning_adv.analysis.ntk_layerwise import conv_gram_macs, supported  # noqa: E402
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


CH6 = (("mlp2", 256), ("mlp4", 256), ("convnet6", 16), ("wrn", 2), ("wrn_nobn", 2), ("wrn_noskip", 2))  # the configs
SWEEP = {"mlp2": (16, 64, 256, 1024), "mlp4": (16, 64, 256, 1024), "convnet6": (4, 16, 64),
         "wrn": (1, 2, 4, 8), "wrn_nobn": (1, 2, 4, 8), "wrn_noskip": (1, 2, 4, 8)}


def ntk_model(family: str, width: int) -> torch.nn.Module:
    """``configs/ch6_ntk_<family>_cifar10.yaml``'s model at ``width`` as the sweep sets it (CIFAR-shaped)."""
    import yaml
    from ntk_width_sweep import width_args

    cfg = yaml.safe_load((REPO / "configs" / f"ch6_ntk_{family}_cifar10.yaml").read_text())["model"]["init_args"]
    return create_model(cfg["arch"], num_classes=cfg["num_classes"], in_channels=cfg["in_channels"],
                        **{**cfg["arch_kwargs"], **width_args(family, width, 32)})


def ntk_macs(model: torch.nn.Module, x: torch.Tensor) -> tuple[float, float]:
    """About how many multiply-adds the per-example loop and the layer-by-layer kernel need (Linear and
    Conv2d layers; forward ``F``). Loop: ``N`` forwards, per (example, output) a backward of weight and
    input gradients (``2 F``), the Gram product of all ``P`` parameters. Layer by layer: the forward,
    ``C`` batched backwards of input gradients (``N C F``), per convolution the cheaper of its two ways
    (``conv_gram_macs``), per Linear layer on vectors only the Grams of its inputs and output gradients,
    per bias and BatchNorm the upper triangle of the Gram product."""
    layers: list[tuple[torch.nn.Module, int]] = []  # (layer, output positions)

    def hook(m: torch.nn.Module, inp: tuple, out: torch.Tensor) -> None:
        layers.append((m, out[0].numel() // out.shape[1]))

    kinds = (torch.nn.Conv2d, torch.nn.Linear)
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, kinds)]
    with torch.no_grad():
        c = model(x[:1]).shape[1]
    for h in handles:
        h.remove()
    n, params = x.shape[0], sum(p.numel() for p in model.parameters())
    rows = n * c
    fwd = sum(m.weight.numel() * pos for m, pos in layers)
    loop = n * fwd + rows * 2 * fwd + rows**2 * params
    layerwise = n * fwd + rows * fwd + rows**2 * (params - sum(m.weight.numel() for m, _ in layers)) / 2
    for m, pos in layers:
        if isinstance(m, torch.nn.Conv2d):
            layerwise += min(conv_gram_macs(n, c, pos, m.out_channels, m.weight[0].numel(), m.groups))
        elif pos == 1:  # Linear on vectors
            layerwise += rows**2 * m.out_features + n**2 * m.in_features
        else:
            layerwise += rows * m.weight.numel() * pos + rows**2 * m.weight.numel() / 2
    return loop, layerwise


def bench_ntk(args: argparse.Namespace, family: str, width: int) -> None:
    """Rounds of the default (layer-by-layer), optionally vmap, and the per-example loop, interleaved."""
    torch.manual_seed(0)
    model = ntk_model(family, width).to(args.device).eval()
    x = torch.rand(args.ntk_samples, 3, 32, 32, device=args.device)
    n_params = sum(p.numel() for p in model.parameters())
    empirical_ntk(model, x[:2])  # warm-up
    sides = {"default": lambda: empirical_ntk(model, x), "loop": lambda: empirical_ntk_loop(model, x)}
    if args.vmap:
        sides["vmap"] = lambda: empirical_ntk(model, x, method="vmap")
    wall: dict[str, list[float]] = {k: [] for k in sides}
    cpu: dict[str, list[float]] = {k: [] for k in sides}
    kernels = {}
    for r in range(args.repeats):
        for name in (list(sides) if r % 2 == 0 else list(sides)[::-1]):  # ABBA
            c0 = time.process_time()
            t, kernels[name] = timed(sides[name], 1, args.device)
            cpu[name].append(time.process_time() - c0)
            wall[name].append(t)
    ref = kernels["loop"]
    err = max(float((k - ref).abs().max() / ref.abs().max()) for k in kernels.values())
    loop_macs, fast_macs = ntk_macs(model, x)
    med = statistics.median
    line = f"NTK {family} width {width} ({n_params / 1e3:.0f}k params, {'layerwise' if supported(model) else 'vmap'})"
    for name in sides:
        line += f", {name} {med(wall[name]) * 1e3:.0f} ms (CPU {med(cpu[name]) * 1e3:.0f})"
    for name in (k for k in sides if k != "loop"):
        ratio_w = med([b / a for a, b in zip(wall[name], wall["loop"])])
        ratio_c = med([b / a for a, b in zip(cpu[name], cpu["loop"])])
        line += f"; loop / {name} x{ratio_w:.1f} (CPU x{ratio_c:.1f})"
    print(f"{line}; multiply-adds loop {loop_macs / 1e9:.1f} G, layerwise {fast_macs / 1e9:.1f} G "
          f"(x{loop_macs / fast_macs:.1f}); max rel. diff {err:.1e}", flush=True)


def bench_sweep_cost(args: argparse.Namespace) -> None:
    """One NTKSnapshot (the default method, N images) per family and width of the sweep."""
    for family, widths in SWEEP.items():
        if args.sweep_families and family not in args.sweep_families:
            continue
        for width in widths:
            torch.manual_seed(0)
            model = ntk_model(family, width).to(args.device).eval()
            x = torch.rand(args.ntk_samples, 3, 32, 32, device=args.device)
            empirical_ntk(model, x[:2])
            c0 = time.process_time()
            t, _ = timed(lambda: empirical_ntk(model, x), 1, args.device)
            c = time.process_time() - c0
            n_params = sum(p.numel() for p in model.parameters())
            print(f"sweep {family} width {width} ({n_params / 1e6:.2f}M params): one snapshot {t * 1e3:.0f} ms "
                  f"(CPU {c * 1e3:.0f} ms); 21 per run of the config's 20 epochs: {21 * t:.1f} s", flush=True)


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
    p.add_argument("--ntk-family", nargs="+", default=["convnet6"], choices=[*SWEEP, "ch6"],
                   help="sweep families at --ntk-width; ch6: every NTK config at its own width")
    p.add_argument("--ntk-width", type=int, default=16)
    p.add_argument("--vmap", action="store_true", help="time torch.func vmap too")
    p.add_argument("--sweep-families", nargs="*", choices=list(SWEEP), help="with --sweep-cost: only these")
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
    for family, width in (CH6 if "ch6" in args.ntk_family else [(f, args.ntk_width) for f in args.ntk_family]):
        bench_ntk(args, family, width)
    if args.ntk_only:
        return 0
    bench_conv_svd(args)
    bench_hvp(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
