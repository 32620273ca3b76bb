"""CIFAR MobileNetV2 as in kuangliu/pytorch-cifar (the ARD student).

The authors' definition (ARD ``models/mobilenetv2.py``), which differs from the ImageNet
MobileNetV2 in several ways:

* stem: 3x3 conv **stride 1**, 32 channels, BN, ReLU;
* inverted-residual blocks ``(expansion, out_planes, num_blocks, stride)``::

      (1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2),
      (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)

  the second stage has stride **1** (ImageNet: 2);
* a block is 1x1 expand-BN-ReLU, 3x3 depthwise-BN-ReLU, 1x1 project-BN, always with the
  1x1 expand conv (even at expansion 1), with **ReLU, not ReLU6**;
* a residual connection whenever stride == 1; when the width changes too it goes through
  a **1x1 conv + BN projection** (the original MobileNetV2 has no residual there);
* 1x1 conv 320 -> 1280, BN, ReLU, ``avg_pool2d(4)``, ``Linear(1280, num_classes)``;
* PyTorch default initialisation. About 2.30M parameters for 10 classes.

State-dict keys are the authors' (``conv1``, ``bn1``, ``layers.<i>.conv1..bn3``,
``layers.<i>.shortcut.0``/``.1``, ``conv2``, ``bn2``, ``linear``).

Deliberate differences: ``self.normalize`` first (identity by default), configurable
``in_channels``, and a clear error for inputs that are not 32x32.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from ..validation import check_image_batch, check_in_channels, check_num_classes
from .normalize import Normalize
from .registry import register_model

__all__ = ["InvertedResidual", "MobileNetV2"]


class InvertedResidual(nn.Module):
    """kuangliu MobileNetV2 ``Block``: expand, depthwise, project; residual if stride 1."""

    def __init__(self, in_planes: int, out_planes: int, expansion: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        planes = expansion * in_planes
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=1, stride=1, padding=0, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, groups=planes, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, kernel_size=1, stride=1, padding=0, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut: Optional[nn.Module]
        if stride != 1:
            self.shortcut = None  # no residual at all when downsampling
        elif in_planes != out_planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=1, padding=0, bias=False),
                nn.BatchNorm2d(out_planes),
            )
        else:
            self.shortcut = nn.Sequential()  # identity

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return out


@register_model("mobilenetv2")
class MobileNetV2(nn.Module):
    """kuangliu CIFAR MobileNetV2 (see the module docstring).

    Args:
        num_classes: number of output logits (>= 2).
        in_channels: input channels (3 for CIFAR).
        mean, std: optional per-channel normalisation applied first (see ``Normalize``).

    Takes (N, in_channels, 32, 32) images in [0, 1] and returns (N, num_classes) logits.
    """

    #: (expansion, out_planes, num_blocks, stride) of each stage, as in the authors' code.
    cfg: tuple[tuple[int, int, int, int], ...] = (
        (1, 16, 1, 1),
        (6, 24, 2, 1),  # stride 1 for CIFAR (ImageNet: 2)
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    )

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        mean: Optional[Sequence[float]] = None,
        std: Optional[Sequence[float]] = None,
    ) -> None:
        super().__init__()
        self.num_classes = check_num_classes(num_classes)
        self.in_channels = check_in_channels(in_channels)
        self.normalize = Normalize(mean, std, num_channels=self.in_channels)
        self.conv1 = nn.Conv2d(self.in_channels, 32, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        blocks = []
        in_planes = 32
        for expansion, out_planes, num_blocks, stride in self.cfg:
            for s in [stride] + [1] * (num_blocks - 1):
                blocks.append(InvertedResidual(in_planes, out_planes, expansion, s))
                in_planes = out_planes
        self.layers = nn.Sequential(*blocks)
        self.conv2 = nn.Conv2d(320, 1280, kernel_size=1, stride=1, padding=0, bias=False)
        self.bn2 = nn.BatchNorm2d(1280)
        self.linear = nn.Linear(1280, self.num_classes)

    def forward(self, x: Tensor) -> Tensor:
        check_image_batch(x, self.in_channels, type(self).__name__, exact_size=32)
        out = self.normalize(x)
        out = F.relu(self.bn1(self.conv1(out)))
        out = self.layers(out)
        out = F.relu(self.bn2(self.conv2(out)))
        out = F.avg_pool2d(out, 4)
        return self.linear(out.flatten(1))
