"""The super-resolution defense (Mustafa et al. 2019): wavelet denoising, then an SRResNet.

``x -> WaveletDenoise -> SRResNet (x scale) -> classifier``. The authors denoised with BayesShrink
soft thresholding (:mod:`.wavelet`), super-resolved x2 and classified the larger image. A few-shot
learner here takes a fixed input size, so the super-resolved image is brought back to the input size
with area averaging (a box filter): the classifier sees the SR network's reconstruction at its own
resolution.

:class:`SRResNet` follows Ledig et al. 2017 (9x9 head conv + PReLU; residual blocks conv-BN-PReLU-
conv-BN; conv-BN and a long skip; PixelShuffle x2 upsampling blocks with PReLU; 9x9 tail conv), with
one addition for short training runs: the output is the bilinear upsampling of the input plus the
network's residual (so an untrained net is already a plain upsampler). It is trained on
``(degraded, clean)`` pairs of the data (:class:`~lightning_adv.modules.SRTraining`: area
downsampling by ``scale``, optional noise).

The denoiser is numpy (zero input gradient as autograd sees it); the SR network is differentiable.
The adaptive attack wraps only the denoiser in :class:`lightning_adv.attacks.BPDA` and
backpropagates through the SR network exactly.
"""
from __future__ import annotations

import math
from typing import Optional

import torch.nn.functional as F
from torch import Tensor, nn

from ..models import load_model_weights
from ..validation import check_int, load_weights_file
from .wavelet import WaveletDenoise

__all__ = ["SRResNet", "SRDefense", "load_sr_net"]


class _Residual(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(width, width, 3, 1, 1), nn.BatchNorm2d(width), nn.PReLU(width),
                                  nn.Conv2d(width, width, 3, 1, 1), nn.BatchNorm2d(width))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class SRResNet(nn.Module):
    """SRResNet (Ledig et al.): ``(N, C, H, W) -> (N, C, scale H, scale W)``.

    Args:
        in_channels: 1 or 3.
        scale: upsampling factor, a power of 2 (the authors' defense: 2).
        width: feature channels (Ledig et al.: 64).
        blocks: residual blocks (Ledig et al.: 16).
    """

    def __init__(self, in_channels: int = 1, scale: int = 2, width: int = 64, blocks: int = 16) -> None:
        super().__init__()
        for name, value, minimum in (("in_channels", in_channels, 1), ("scale", scale, 2), ("width", width, 1),
                                     ("blocks", blocks, 1)):
            check_int(f"SRResNet.{name}", value, minimum)
        if scale & (scale - 1):
            raise ValueError(f"SRResNet.scale={scale} must be a power of 2 (x2 PixelShuffle blocks), e.g. 2 or 4")
        self.in_channels, self.scale = in_channels, scale
        self.head = nn.Sequential(nn.Conv2d(in_channels, width, 9, 1, 4), nn.PReLU(width))
        self.blocks = nn.Sequential(*[_Residual(width) for _ in range(blocks)])
        self.trunk_end = nn.Sequential(nn.Conv2d(width, width, 3, 1, 1), nn.BatchNorm2d(width))
        ups: list[nn.Module] = []
        for _ in range(int(math.log2(scale))):
            ups += [nn.Conv2d(width, 4 * width, 3, 1, 1), nn.PixelShuffle(2), nn.PReLU(width)]
        self.upsample = nn.Sequential(*ups)
        self.tail = nn.Conv2d(width, in_channels, 9, 1, 4)

    def forward(self, x: Tensor) -> Tensor:
        h = self.head(x)
        h = h + self.trunk_end(self.blocks(h))
        base = F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return base + self.tail(self.upsample(h))


def load_sr_net(path: str) -> SRResNet:
    """The SRResNet of a :class:`~lightning_adv.modules.SRTraining` checkpoint (``weights_only=True``)."""
    ckpt = load_weights_file(path, "purifier_checkpoint")
    hp = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    if not hp or "sr_blocks" not in hp:
        raise ValueError(f"purifier_checkpoint={path!r} is not an SRTraining checkpoint (no sr_blocks in its "
                         f"hyper_parameters); train one with python train.py fit --config "
                         f"configs/purifier_sr_omniglot.yaml")
    net = SRResNet(in_channels=hp["in_channels"], scale=hp["scale"], width=hp["sr_width"], blocks=hp["sr_blocks"])
    return load_model_weights(net, ckpt, key_prefix="net.")


class SRDefense(nn.Module):
    """Wavelet denoising, x``scale`` super-resolution, area averaging back to the input size.

    Args:
        sr_net: the trained :class:`SRResNet` (kept in eval mode).
        denoiser: the wavelet step (default: the authors' BayesShrink, soft, sigma 0.04, 'db1').
        resize_back: area-average the SR output back to the input size (a fixed-size classifier).
    """

    def __init__(self, sr_net: SRResNet, denoiser: Optional[nn.Module] = None, resize_back: bool = True) -> None:
        super().__init__()
        self.sr_net = sr_net
        self.denoiser = denoiser if denoiser is not None else WaveletDenoise()
        self.resize_back = bool(resize_back)

    def check_input_shape(self, shape: tuple[int, ...]) -> None:
        if shape[0] != self.sr_net.in_channels:
            raise ValueError(f"the SR network takes {self.sr_net.in_channels}-channel images but the data has "
                             f"shape {tuple(shape)}; train it on this data")

    def super_resolve(self, x: Tensor) -> Tensor:
        """The SR network (eval mode) and the area resize, without the denoiser."""
        training = self.sr_net.training
        self.sr_net.eval()
        try:
            up = self.sr_net(x)
        finally:
            self.sr_net.train(training)
        if self.resize_back:
            # checker: torch's stubs: a Size is a tuple of ints
            up = F.adaptive_avg_pool2d(up, x.shape[-2:])  # type: ignore[arg-type]
        return up.clamp(0.0, 1.0)

    def forward(self, x: Tensor) -> Tensor:
        return self.super_resolve(self.denoiser(x))
