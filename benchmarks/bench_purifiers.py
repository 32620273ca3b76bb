"""Purification time per image of DefenseGAN and the SR defense, next to a plain forward (thesis 5.5).

    OMP_NUM_THREADS=1 python benchmarks/bench_purifiers.py [--size 28] [--batch 25] [--restarts 10 --steps 200]

Untrained models of the offline configs' sizes (the time does not depend on the weights): the
Omniglot generator (latent 64, width 64), the SRResNet (32 channels, 8 blocks) with wavelet
denoising (db1, BayesShrink), and the few-shot learner's Conv-4 (32 channels) for the plain forward.
Prints milliseconds per image and the ratio to the Conv-4 forward. DefenseGAN's cost is
restarts x steps generator forward+backward passes per image (Samangouei et al.: 10 x 200).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's packages first

from lightning_adv.defenses import DefenseGAN, Generator, SRDefense, SRResNet, WaveletDenoise  # noqa: E402
from lightning_adv.models import create_model  # noqa: E402


def per_image_ms(fn, x: torch.Tensor, repeats: int) -> float:
    fn(x)  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn(x)
    return 1000 * (time.perf_counter() - t0) / (repeats * x.shape[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--batch", type=int, default=25)
    parser.add_argument("--restarts", type=int, default=10)
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    torch.manual_seed(0)
    x = torch.rand(args.batch, 1, args.size, args.size)
    conv4 = create_model("conv4", in_channels=1, input_size=args.size, width=32).eval()
    defensegan = DefenseGAN(Generator(64, args.size, 1, 64), restarts=args.restarts, steps=args.steps)
    denoise = WaveletDenoise()
    sr = SRDefense(SRResNet(1, 2, 32, 8).eval(), denoise)
    with torch.no_grad():
        forward = per_image_ms(lambda b: conv4.embed(b), x, 20)
        wavelet = per_image_ms(denoise, x, 5)
        sr_ms = per_image_ms(sr, x, 5)
    gan_ms = per_image_ms(defensegan, x, 1)
    print(f"{args.batch} images {args.size}x{args.size}, {torch.get_num_threads()} thread(s)")
    print(f"{'step':<44} {'ms/image':>10} {'x forward':>10}")
    for name, ms in (("Conv-4 forward (reference)", forward), ("wavelet denoising (numpy)", wavelet),
                     ("SR defense (wavelet + SRResNet x2 + area)", sr_ms),
                     (f"DefenseGAN R={args.restarts} L={args.steps}", gan_ms)):
        print(f"{name:<44} {ms:>10.3f} {ms / forward:>10.1f}")


if __name__ == "__main__":
    main()
