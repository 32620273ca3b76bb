"""ResNet-20 with Fixup initialisation (Zhang, Dauphin & Ma, ICLR 2019): no BatchNorm (thesis tables 6.6-6.7).

Follows the authors' ``fixup_resnet_cifar.py``: CIFAR ResNet of ``(depth - 2) / 6`` basic
blocks per stage (16/32/64 channels), each block
``relu(scale * conv2(relu(conv1(x + b1a) + b1b) + b2a) + b2b + shortcut)`` with scalar
biases ``b*`` (zero) and a scalar multiplier ``scale`` (one); the down-sampling shortcut
is ``AvgPool2d(1, stride)`` of ``x + b1a`` padded with zero channels. Initialisation:
``conv1`` of every block He-normal scaled by ``L^{-1/2}`` (L = number of blocks),
``conv2`` and the final linear layer zero (``zero_init=False`` keeps PyTorch's default for
them: the paper's ablation, and what lets a test see input gradients at initialisation).
ResNet-20: about 0.27M parameters.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..validation import check_image_batch, check_in_channels, check_int, check_num_classes
from .normalize import Normalize
from .registry import register_model

__all__ = ["FixupBasicBlock", "FixupResNet"]


class FixupBasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bias1a = nn.Parameter(torch.zeros(1))
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bias1b = nn.Parameter(torch.zeros(1))
        self.bias2a = nn.Parameter(torch.zeros(1))
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, padding=1, bias=False)
        self.scale = nn.Parameter(torch.ones(1))
        self.bias2b = nn.Parameter(torch.zeros(1))
        self.stride = stride
        self.pad_channels = planes - in_planes

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(x + self.bias1a)
        out = F.relu(out + self.bias1b)
        out = self.conv2(out + self.bias2a)
        out = out * self.scale + self.bias2b
        identity = x
        if self.stride != 1 or self.pad_channels:
            identity = F.avg_pool2d(x + self.bias1a, 1, stride=self.stride)
            identity = F.pad(identity, (0, 0, 0, 0, 0, self.pad_channels))
        return F.relu(out + identity)


@register_model("fixup_resnet20", depth=20)
@register_model("fixup_resnet")
class FixupResNet(nn.Module):
    """CIFAR Fixup ResNet-``depth`` (see the module docstring).

    Args:
        depth: ``6n + 2`` (20, 32, 44, 56, 110).
        zero_init: Fixup's zero initialisation of each block's last conv and of the classifier.
        num_classes, in_channels, mean, std: as for every model of the zoo.
    """

    def __init__(self, depth: int = 20, zero_init: bool = True, num_classes: int = 10, in_channels: int = 3,
                 mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None) -> None:
        super().__init__()
        depth = check_int("depth", depth, 8, "ResNet-20 has depth=20")
        if (depth - 2) % 6 != 0:
            raise ValueError(f"depth must be 6n + 2 (20, 32, 44, 56, 110), got depth={depth}")
        self.depth = depth
        self.num_classes = check_num_classes(num_classes)
        self.in_channels = check_in_channels(in_channels)
        n = (depth - 2) // 6
        self.normalize = Normalize(mean, std, num_channels=self.in_channels)
        self.conv1 = nn.Conv2d(self.in_channels, 16, kernel_size=3, padding=1, bias=False)
        self.bias1 = nn.Parameter(torch.zeros(1))
        stages = []
        in_planes = 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = [FixupBasicBlock(in_planes, planes, stride)] + [FixupBasicBlock(planes, planes) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
            in_planes = planes
        self.layer1, self.layer2, self.layer3 = stages
        self.bias2 = nn.Parameter(torch.zeros(1))
        self.fc = nn.Linear(64, self.num_classes)
        num_blocks = 3 * n
        for m in self.modules():
            if isinstance(m, FixupBasicBlock):
                w = m.conv1.weight
                nn.init.normal_(w, 0.0, math.sqrt(2.0 / (w.shape[0] * w.shape[2] * w.shape[3])) * num_blocks ** -0.5)
                if zero_init:
                    nn.init.zeros_(m.conv2.weight)
        if zero_init:
            nn.init.zeros_(self.fc.weight)
            nn.init.zeros_(self.fc.bias)

    def forward(self, x: Tensor) -> Tensor:
        check_image_batch(x, self.in_channels, type(self).__name__, min_size=4)
        out = F.relu(self.conv1(self.normalize(x)) + self.bias1)
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out + self.bias2)
