"""DenseNet for CIFAR (Huang et al., 2017): DenseNet-40 (growth rate 12) of thesis tables 6.5-6.7.

The original "DenseNet (L=40, k=12)" without bottleneck or compression: a 3x3 stem conv
to ``2k`` channels (16 for the original basic DenseNet; ``stem_channels``), three dense
blocks of ``(depth - 4) / 3`` layers ``BN-ReLU-conv3x3(k)`` whose outputs are concatenated
to their inputs, transitions ``BN-ReLU-conv1x1-avgpool2`` (keeping the width) between
blocks, and ``BN-ReLU-global avgpool-linear`` at the end. About 1.0M parameters for
depth 40 (the paper's count). This project's own definition following the paper; dropout
is omitted (the paper uses 0.2 only without data augmentation).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..validation import check_image_batch, check_in_channels, check_int, check_num_classes
from .normalize import Normalize
from .registry import register_model

__all__ = ["DenseNet"]


class _DenseLayer(nn.Module):
    def __init__(self, in_channels: int, growth_rate: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(in_channels)
        self.conv = nn.Conv2d(in_channels, growth_rate, kernel_size=3, padding=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([x, self.conv(F.relu(self.bn(x)))], dim=1)


class _Transition(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)
        self.conv = nn.Conv2d(channels, channels, kernel_size=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(self.conv(F.relu(self.bn(x))), 2)


@register_model("densenet40", depth=40, growth_rate=12)
@register_model("densenet")
class DenseNet(nn.Module):
    """CIFAR DenseNet-``depth`` with growth rate ``growth_rate`` (see the module docstring).

    Args:
        depth: total depth; ``(depth - 4)`` must be divisible by 3 (40: 12 layers a block).
        growth_rate: channels each dense layer adds (k).
        stem_channels: channels of the first conv (16 in the paper).
        num_classes, in_channels, mean, std: as for every model of the zoo.

    Takes (N, in_channels, H, W) images with H, W >= 4 (32 for CIFAR).
    """

    def __init__(self, depth: int = 40, growth_rate: int = 12, stem_channels: int = 16, num_classes: int = 10,
                 in_channels: int = 3, mean: Optional[Sequence[float]] = None,
                 std: Optional[Sequence[float]] = None) -> None:
        super().__init__()
        depth = check_int("depth", depth, 7, "DenseNet-40 has depth=40")
        if (depth - 4) % 3 != 0:
            raise ValueError(f"depth must satisfy (depth - 4) % 3 == 0, got depth={depth}; e.g. 40 or 100")
        self.depth = depth
        self.growth_rate = check_int("growth_rate", growth_rate, 1, "the paper uses growth_rate=12")
        stem = check_int("stem_channels", stem_channels, 1, "the paper uses 16")
        self.num_classes = check_num_classes(num_classes)
        self.in_channels = check_in_channels(in_channels)
        per_block = (depth - 4) // 3
        self.normalize = Normalize(mean, std, num_channels=self.in_channels)
        self.conv1 = nn.Conv2d(self.in_channels, stem, kernel_size=3, padding=1, bias=False)
        blocks: list[nn.Module] = []
        channels = stem
        for b in range(3):
            layers = []
            for _ in range(per_block):
                layers.append(_DenseLayer(channels, self.growth_rate))
                channels += self.growth_rate
            blocks.append(nn.Sequential(*layers))
            if b < 2:
                blocks.append(_Transition(channels))
        self.features = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(channels)
        self.fc = nn.Linear(channels, self.num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        check_image_batch(x, self.in_channels, type(self).__name__, min_size=4)
        out = self.features(self.conv1(self.normalize(x)))
        out = F.adaptive_avg_pool2d(F.relu(self.bn(out)), 1)
        return self.fc(out.flatten(1))
