#!/usr/bin/env python
"""Benchmark: adversarial querying (issue 4).

(a) time of one meta-training step with adversarial querying (PGD-K on the queries, K=7
    by default) divided by one natural meta-training step, same head, backbone and
    tasks (target: <= 1.1 * (1 + 2K/3): K attack forward+backward passes over the queries
    on top of the support and query forwards and one backward);
(b) time of the R2-D2 head (fit on the support features: Gram matrix, the S x S solve;
    then the query logits) divided by the backbone forward on the same support and query
    images.

A step is ``AdversarialQuerying.training_step`` on a batch of tasks, ``backward`` and an
SGD step, called directly (the Trainer loop overhead is the AT benchmark's subject). The
AQ and natural steps alternate (ABAB...) on the same batches, so both see the same
background load; ratios are medians of the per-pair ratios. This is a benchmark, not a
test: it never asserts on timings.

Examples::

    python benchmarks/bench_fewshot.py                                  # R2-D2 net, CIFAR-FS shape, 5-way 5-shot
    python benchmarks/bench_fewshot.py --arch conv4 --image-size 84 --head protonet
    python benchmarks/bench_fewshot.py --device cuda --tasks 8 --shots 15 --queries 6
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import torch

_ROOT = Path(__file__).resolve().parents[1]
for p in (_ROOT, _ROOT / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import bench_adv_training as bat  # noqa: E402  (configure_runtime, median)
from lightning_adv.attacks import PGD  # noqa: E402
from lightning_adv.modules import AdversarialQuerying, OptimConfig  # noqa: E402
from lightning_adv.meta import MAML, HeadLearner  # noqa: E402
from lightning_adv.objectives import AQ, MetaNatural  # noqa: E402


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="r2d2_embedding")
    p.add_argument("--head", default="r2d2", choices=["r2d2", "protonet", "metaoptnet", "maml"])
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--ways", type=int, default=5)
    p.add_argument("--shots", type=int, default=5)
    p.add_argument("--queries", type=int, default=6)
    p.add_argument("--tasks", type=int, default=2)
    p.add_argument("--pgd-steps", type=int, default=7)
    p.add_argument("--steps", type=int, default=6, help="timed pairs of steps")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", type=torch.device, default=torch.device("cpu"))
    return p.parse_args(argv)


def make_batch(args: argparse.Namespace, seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    t, w, c, s = args.tasks, args.ways, args.channels, args.image_size
    sy = torch.arange(w).repeat_interleave(args.shots).repeat(t, 1)
    qy = torch.arange(w).repeat_interleave(args.queries).repeat(t, 1)
    sx = torch.rand(t, sy.shape[1], c, s, s, generator=g)
    qx = torch.rand(t, qy.shape[1], c, s, s, generator=g)
    return tuple(x.to(args.device) for x in (sx, sy, qx, qy))


def build(args: argparse.Namespace, mode: str) -> tuple[AdversarialQuerying, torch.optim.Optimizer]:
    torch.manual_seed(0)
    attack = PGD(eps=8 / 255, steps=args.pgd_steps, step_size=2 / 255, bn_mode="train")
    learner = MAML(ways=args.ways) if args.head == "maml" else HeadLearner(args.head)
    module = AdversarialQuerying(
        arch=args.arch, in_channels=args.channels, image_size=args.image_size, learner=learner,
        objective=AQ(attack=attack) if mode == "aq" else MetaNatural(),
        optim=OptimConfig(lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True, scheduler="constant"))
    module.log = lambda *a, **k: None  # type: ignore[method-assign]  (no Trainer attached)
    module.to(args.device).train()
    return module, torch.optim.SGD(module.parameters(), lr=0.01, momentum=0.9, nesterov=True)


def sync(args: argparse.Namespace) -> None:
    if args.device.type == "cuda":
        torch.cuda.synchronize(args.device)


def timed(args: argparse.Namespace, fn: Callable[[], object]) -> float:
    sync(args)
    t0 = time.perf_counter()
    fn()
    sync(args)
    return time.perf_counter() - t0


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    bat.configure_runtime(args)
    K = args.pgd_steps
    print(f"torch {torch.__version__} | python {platform.python_version()} | device {args.device} "
          f"({platform.processor() or platform.machine()}), threads {args.threads}\n"
          f"{args.arch} + {args.head} head, {args.channels}x{args.image_size}x{args.image_size}, {args.tasks} tasks of "
          f"{args.ways}-way {args.shots}-shot {args.queries} queries/class; AQ: PGD-{K} 8/255 step 2/255, train mode")

    aq, aq_opt = build(args, "aq")
    nat, nat_opt = build(args, "natural")
    batches = [make_batch(args, i) for i in range(args.warmup + args.steps)]

    def step(module: AdversarialQuerying, opt: torch.optim.Optimizer, batch: tuple) -> None:
        opt.zero_grad(set_to_none=True)
        module.training_step(batch, 0).backward()
        opt.step()

    ratios, t_aq, t_nat = [], [], []
    for i, batch in enumerate(batches):
        a = timed(args, lambda: step(aq, aq_opt, batch))
        n = timed(args, lambda: step(nat, nat_opt, batch))
        if i >= args.warmup:
            t_aq.append(a)
            t_nat.append(n)
            ratios.append(a / n)
    target = 1.1 * (1 + 2 * K / 3)
    r = bat.median(ratios)
    print(f"\n(a) meta-training step: AQ {1e3 * bat.median(t_aq):.1f} ms, natural {1e3 * bat.median(t_nat):.1f} ms; "
          f"ratio (median of {len(ratios)} pairs) {r:.2f} [min {min(ratios):.2f}, max {max(ratios):.2f}] "
          f"vs target <= 1.1*(1+2K/3) = {target:.2f}: {'OK' if r <= target else 'MISSED'}")

    # (b) R2-D2 head vs backbone forward, eval mode, no grad
    module = nat.eval()
    head = module.learner.head if args.head == "r2d2" else AdversarialQuerying(
        arch=args.arch, in_channels=args.channels, image_size=args.image_size).learner.head
    sx, sy, qx, qy = batches[0]
    t, s = sx.shape[:2]
    with torch.no_grad():
        emb = module.backbone.embed(sx.flatten(0, 1)).view(t, s, -1)
        qemb = module.backbone.embed(qx.flatten(0, 1)).view(t, qx.shape[1], -1)
        t_head, t_fwd = [], []
        for _ in range(args.steps + args.warmup):
            t_head.append(timed(args, lambda: head.fit(emb, sy, args.ways)(qemb)))
            t_fwd.append(timed(args, lambda: (module.backbone.embed(sx.flatten(0, 1)),
                                              module.backbone.embed(qx.flatten(0, 1)))))
    h, f = bat.median(t_head[args.warmup:]), bat.median(t_fwd[args.warmup:])
    print(f"(b) R2-D2 head (fit on {s} support features of dim {emb.shape[-1]} + {qx.shape[1]} query logits, "
          f"{t} tasks): {1e3 * h:.2f} ms vs backbone forward on the same {t * (s + qx.shape[1])} images "
          f"{1e3 * f:.1f} ms: ratio {h / f:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
