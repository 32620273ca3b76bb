"""NTK width sweep (thesis figures 6.1, 6.3, 6.5): train a family at several widths, then plot
the correlation and relative change of the final NTK against the initial one.

    python scripts/ntk_width_sweep.py --family wrn --widths 1 2 4 8 --out runs/ntk_sweep
    python scripts/ntk_width_sweep.py --family mlp2 --widths 16 64 256 1024 -- --trainer.max_epochs 5
    python scripts/ntk_width_sweep.py --plot-only --out runs/ntk_sweep     # redraw from saved snapshots

Each run is ``train.py fit --config configs/ch6_ntk_<family>_cifar10.yaml`` with the width set
(MLP: hidden size, ConvNet: first conv's channels, WideResNet: widen factor) and NTKSnapshot
saving its kernels under ``<out>/<family>_w<width>/ntk``; arguments after ``--`` go to every
run (e.g. another datamodule). The plot (``<out>/ntk_width_sweep.png``) and a table
(``<out>/ntk_width_sweep.json``) are drawn from whatever snapshots are under ``<out>``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FAMILIES = ("mlp2", "mlp4", "convnet6", "wrn", "wrn_nobn", "wrn_noskip")


def width_args(family: str, width: int, input_size: int) -> dict:
    if family == "mlp2":
        return {"input_size": input_size, "hidden": [width]}
    if family == "mlp4":
        return {"input_size": input_size, "hidden": [width] * 3}
    if family == "convnet6":
        return {"width": width}
    return {"depth": 16, "widen_factor": width}


def run(family: str, width: int, out: Path, input_size: int, extra: list[str]) -> None:
    from lightning_adv.cli import main

    run_dir = out / f"{family}_w{width}"
    args = ["fit", "--config", str(REPO / "configs" / f"ch6_ntk_{family}_cifar10.yaml"),
            "--model.init_args.arch_kwargs", json.dumps(width_args(family, width, input_size)),
            "--trainer.logger.init_args.save_dir", str(out), "--trainer.logger.init_args.name", f"{family}_w{width}",
            "--trainer.default_root_dir", str(run_dir), "--trainer.callbacks.init_args.save_dir",
            str(run_dir / "ntk"), *extra]  # the last callback of the config is its NTKSnapshot
    main(args)


def collect(out: Path) -> list[dict]:
    from lightning_adv.callbacks import load_ntk_snapshots

    rows = []
    for ntk_dir in sorted(out.glob("*_w*/ntk")):
        snaps = load_ntk_snapshots(ntk_dir)
        if len(snaps) < 2:
            continue
        family, width = ntk_dir.parent.name.rsplit("_w", 1)
        last = snaps[-1]
        rows.append({"family": family, "width": int(width), "num_params": int(last["num_params"]),
                     "epochs": int(last["epoch"]) + 1, "correlation": last["correlation"],
                     "rel_change": last["rel_change"], "param_rel_change": last["param_rel_change"]})
    return sorted(rows, key=lambda r: (r["family"], r["num_params"]))


def plot(rows: list[dict], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for family in sorted({r["family"] for r in rows}):
        fam = [r for r in rows if r["family"] == family]
        for ax, key in zip(axes, ("correlation", "rel_change", "param_rel_change")):
            ax.plot([r["num_params"] for r in fam], [r[key] for r in fam], "o-", label=family)
    for ax, title in zip(axes, ("NTK correlation (final vs initial)", "||K_1 - K_0|| / ||K_0||",
                                "||theta_1 - theta_0|| / ||theta_0||")):
        ax.set_xscale("log")
        ax.set_xlabel("number of parameters")
        ax.set_title(title)
    axes[0].legend()
    fig.tight_layout()
    path = out / "ntk_width_sweep.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--family", nargs="+", default=["mlp2"], choices=FAMILIES)
    p.add_argument("--widths", nargs="+", type=int, default=[16, 64, 256])
    p.add_argument("--input-size", type=int, default=32, help="image side for the MLPs (32 for CIFAR)")
    p.add_argument("--out", default="runs/ntk_sweep")
    p.add_argument("--plot-only", action="store_true")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.plot_only:
        for family in args.family:
            for width in args.widths:
                run(family, width, out, args.input_size, extra)
    rows = collect(out)
    if not rows:
        print(f"no NTK snapshots under {out}", file=sys.stderr)
        return 1
    (out / "ntk_width_sweep.json").write_text(json.dumps(rows, indent=1))
    path = plot(rows, out)
    print(f"{'family':<12}{'width':>6}{'params':>10}{'corr':>8}{'rel.chg':>9}{'param chg':>10}")
    for r in rows:
        print(f"{r['family']:<12}{r['width']:>6}{r['num_params']:>10}{r['correlation']:>8.3f}"
              f"{r['rel_change']:>9.3f}{r['param_rel_change']:>10.3f}")
    print(f"plot: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
