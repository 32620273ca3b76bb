#!/usr/bin/env python
"""Benchmark: time per 1,000 examples of PGD-20 and AutoAttack-standard on the same model,
and our PGD against torchattacks' PGD (same settings) when torchattacks is importable.

The cost of AutoAttack depends on how robust the model is (its cascade only attacks points
still robust; Square's 5000 queries run on the survivors), so the default times a
PGD-trained model: the quickstart recipe (small_cnn, PGD-5, eps 0.15) trained here for
``--epochs`` on scikit-learn digits, attacked on the digits test set (450 images), eps 0.15.
``--checkpoint`` times a checkpoint of this project instead (``--data digits`` only, or
``--data random`` with ``--arch/--image-size``: random images labelled by the model, for
pure speed on a GPU).

Reported: seconds per 1,000 examples for PGD-20 (Linf, step eps/8, random start),
AutoAttack standard (APGD-CE, APGD-T, FAB-T, Square 5000; ``pyautoattack``), each
component, the ratio AutoAttack / PGD-20, the robust accuracies, and, with torchattacks,
ours / torchattacks for PGD-20 (time ratio, medians of ``--repeats`` alternating runs) and
both robust accuracies. torchattacks is not a dependency (it pins ``requests~=2.25.1``);
install it in a throwaway place, e.g.
``pip install --no-deps --target /tmp/ta torchattacks==3.5.1`` and run with
``PYTHONPATH=/tmp/ta``. Nothing is asserted; the script exits 0.

    python benchmarks/bench_attacks.py                   # CPU, about 2-4 minutes on 2 shared cores
    python benchmarks/bench_attacks.py --device cuda --data random --arch resnet18 --image-size 32 --n 1000
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import Tensor, nn

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

from bench_adv_training import configure_runtime  # noqa: E402

from lightning_adv.attacks import AUTOATTACK_COMPONENTS, PGD, AutoAttack  # noqa: E402


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", choices=["digits", "random"], default="digits")
    p.add_argument("--checkpoint", default=None, help="a checkpoint of this project (weights_only load)")
    p.add_argument("--arch", default="small_cnn")
    p.add_argument("--in-channels", type=int, default=None)
    p.add_argument("--image-size", type=int, default=32, help="--data random only")
    p.add_argument("--n", type=int, default=450, help="examples attacked (digits: at most 450)")
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--eps", type=float, default=0.15)
    p.add_argument("--epochs", type=int, default=5, help="PGD training epochs of the default digits model")
    p.add_argument("--repeats", type=int, default=3, help="alternating runs for PGD ours vs torchattacks")
    p.add_argument("--skip-components", action="store_true", help="do not time AutoAttack's components alone")
    p.add_argument("--skip-autoattack", action="store_true", help="only PGD-20 (and the torchattacks comparison)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    args.device = torch.device(args.device)
    return args


def model_and_data(args: argparse.Namespace) -> tuple[nn.Module, Tensor, Tensor, str]:
    import lightning.pytorch as pl

    from lightning_adv.datamodules import DigitsDataModule
    from lightning_adv.models import create_model
    from lightning_adv.modules import AdvTraining, OptimConfig

    if args.data == "digits":
        dm = DigitsDataModule(batch_size=64)
        dm.setup("test")
        n = min(args.n, len(dm.test_dataset))
        xs, ys = zip(*[dm.test_dataset[i] for i in range(n)])
        x, y = torch.stack(xs), torch.tensor(ys)
        in_ch, size = 1, 8
    else:
        in_ch, size = args.in_channels or 3, args.image_size
        x = torch.rand(args.n, in_ch, size, size, generator=torch.Generator().manual_seed(0))
        y = torch.zeros(args.n, dtype=torch.long)  # replaced by the model's predictions below
    if args.checkpoint:
        ckpt = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
        hp = ckpt.get("hyper_parameters", {})
        model = create_model(hp.get("arch", args.arch), num_classes=hp.get("num_classes", 10),
                             in_channels=hp.get("in_channels", in_ch))
        state = {k[len("model."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
        model.load_state_dict(state)
        what = f"checkpoint {args.checkpoint}"
    elif args.data == "digits":
        pl.seed_everything(0, verbose=False)
        from lightning_adv.objectives import PGDAT

        module = AdvTraining(arch=args.arch, in_channels=1, objective=PGDAT(
                             attack=PGD(eps=args.eps, steps=5, step_size=args.eps / 2.5, bn_mode="train")),
                             optim=OptimConfig(optimizer="adam", lr=3e-3, weight_decay=0.0, scheduler="constant"))
        t0 = time.perf_counter()
        pl.Trainer(max_epochs=args.epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                   enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0).fit(module, dm)
        model = module.model
        what = f"{args.arch} PGD-5-trained on digits for {args.epochs} epochs ({time.perf_counter() - t0:.0f} s)"
    else:
        model = create_model(args.arch, num_classes=10, in_channels=in_ch)
        what = f"{args.arch} (random init)"
    model = model.to(args.device).eval()
    x = x.to(args.device)
    if args.data == "random":
        with torch.no_grad():
            y = model(x).argmax(1)
    return model, x, y.to(args.device), what


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Tensor], device: torch.device) -> tuple[float, Tensor]:
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - t0, out


def batched(attack: Callable[[Tensor, Tensor], Tensor], x: Tensor, y: Tensor, bs: int) -> Tensor:
    return torch.cat([attack(x[i:i + bs], y[i:i + bs]) for i in range(0, x.shape[0], bs)])


def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    cuda = configure_runtime(args)
    model, x, y, what = model_and_data(args)
    n, eps, bs = x.shape[0], args.eps, args.batch_size
    per_k = 1000.0 / n
    dev = torch.cuda.get_device_name(args.device) if cuda else (platform.processor() or platform.machine())
    print(f"torch {torch.__version__} | device {args.device} ({dev}) | threads {args.threads}\n"
          f"model: {what}\n{n} examples, Linf eps {eps:g}, batch {bs}; clean accuracy {accuracy(model, x, y):.2%}")
    results: dict[str, float] = {}

    pgd = PGD(eps=eps, steps=20, step_size=eps / 8)
    torch.manual_seed(0)
    t_pgd, adv = timed(lambda: batched(lambda a, b: pgd.run(model, a, b).x_adv, x, y, bs), args.device)
    results.update(pgd20_s_per_1000=t_pgd * per_k, pgd20_acc=accuracy(model, adv, y))
    print(f"\nPGD-20:               {t_pgd * per_k:8.2f} s / 1000 examples, robust acc {results['pgd20_acc']:.2%}")
    if not args.skip_autoattack:
        aa = AutoAttack(eps=eps)
        t_aa, adv = timed(lambda: batched(lambda a, b: aa.run(model, a, b).x_adv, x, y, bs), args.device)
        results.update(autoattack_s_per_1000=t_aa * per_k, autoattack_acc=accuracy(model, adv, y),
                       autoattack_over_pgd20=t_aa / t_pgd)
        print(f"AutoAttack standard:  {t_aa * per_k:8.2f} s / 1000 examples, robust acc "
              f"{results['autoattack_acc']:.2%}  -> {t_aa / t_pgd:.1f}x PGD-20")
    if not args.skip_components and not args.skip_autoattack:
        for comp in AUTOATTACK_COMPONENTS:  # each alone on every clean-correct point (no cascade)
            one = AutoAttack(eps=eps, components=[comp])
            t, adv = timed(lambda: batched(lambda a, b: one.run(model, a, b).x_adv, x, y, bs), args.device)
            results[f"{comp}_s_per_1000"] = t * per_k
            results[f"{comp}accuracy"] = accuracy(model, adv, y)
            print(f"  {comp:8s} alone:      {t * per_k:8.2f} s / 1000 examples, robust acc {results[f'{comp}accuracy']:.2%}")

    try:
        import torchattacks
    except ImportError:
        print("\ntorchattacks not importable: ours-vs-torchattacks PGD comparison skipped "
              "(pip install --no-deps --target /tmp/ta torchattacks==3.5.1; PYTHONPATH=/tmp/ta)")
    else:
        ta = torchattacks.PGD(model, eps=eps, alpha=eps / 8, steps=20, random_start=True)
        ours_t, theirs_t, ours_acc, theirs_acc = [], [], [], []
        for r in range(args.repeats):  # alternate the order (ABBA) against drift
            order = [0, 1] if r % 2 == 0 else [1, 0]
            for which in order:
                torch.manual_seed(r)
                if which == 0:
                    t, adv = timed(lambda: batched(lambda a, b: pgd.run(model, a, b).x_adv, x, y, bs), args.device)
                    ours_t.append(t), ours_acc.append(accuracy(model, adv, y))
                else:
                    t, adv = timed(lambda: batched(lambda a, b: ta(a, b), x, y, bs), args.device)
                    theirs_t.append(t), theirs_acc.append(accuracy(model.eval(), adv, y))
        mo, mt = statistics.median(ours_t), statistics.median(theirs_t)
        results.update(pgd20_ours_s_per_1000=mo * per_k, pgd20_torchattacks_s_per_1000=mt * per_k,
                       ours_over_torchattacks=mo / mt, pgd20_ours_acc=statistics.mean(ours_acc),
                       pgd20_torchattacks_acc=statistics.mean(theirs_acc))
        print(f"\nPGD-20 ours vs torchattacks {torchattacks.__version__} (median of {args.repeats}):\n"
              f"  ours         {mo * per_k:8.2f} s / 1000, robust acc {statistics.mean(ours_acc):.2%}\n"
              f"  torchattacks {mt * per_k:8.2f} s / 1000, robust acc {statistics.mean(theirs_acc):.2%}\n"
              f"  ratio ours / torchattacks: {mo / mt:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
