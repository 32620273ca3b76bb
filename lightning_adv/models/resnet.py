"""CIFAR ResNets as in kuangliu/pytorch-cifar (used by the ARD code), with optional skips.

The authors' definition (ARD ``models/resnet.py``):

* stem: 3x3 conv, stride 1, 64 channels, no bias, BN, ReLU; **no max-pool**;
* four stages of ``BasicBlock`` with 64/128/256/512 channels, strides 1/2/2/2
  (ResNet-18: [2, 2, 2, 2] blocks, ResNet-34: [3, 4, 6, 3]);
* ``BasicBlock``: conv3x3-BN-ReLU-conv3x3-BN, plus a shortcut (identity, or 1x1 conv + BN
  when the stride or the width changes), then ReLU;
* ``avg_pool2d(4)`` on the 4x4 map of a 32x32 input, then ``Linear(512, num_classes)``;
* PyTorch default initialisation.

State-dict keys are the authors' (``conv1``, ``bn1``, ``layer1.0.conv1``,
``layer2.0.shortcut.0``/``.1``, ``linear``), so their checkpoints load.

``skip=False`` gives the *skipless* ResNet-18 of the thesis (chapter 6, table 6.8): every
``BasicBlock`` drops its shortcut (identity and projection alike) and computes
``relu(bn2(conv2(relu(bn1(conv1(x))))))``. It has the same parameters as the skip
version minus the three projection shortcuts.

Deliberate differences from the authors' code: the input goes through ``self.normalize``
first (identity by default), ``in_channels`` is configurable, the in-place
``out += shortcut(x)`` is written out of place (for ``torch.func``), and a non-32x32
input raises a clear error instead of silently mis-sizing the final pooling.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from ..validation import check_image_batch, check_in_channels, check_num_classes, check_positive_ints
from .normalize import Normalize
from .registry import register_model

__all__ = ["BasicBlock", "ResNet", "ResNet18", "ResNet34"]


class BasicBlock(nn.Module):
    """kuangliu ``BasicBlock``; ``skip=False`` removes the shortcut entirely (no keys)."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, skip: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.skip = skip
        self.shortcut: Optional[nn.Module]
        if not skip:
            self.shortcut = None
        elif stride != 1 or in_planes != planes * self.expansion:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes * self.expansion, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * self.expansion),
            )
        else:
            self.shortcut = nn.Sequential()  # identity; no parameters, no state-dict keys

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return F.relu(out)


class ResNet(nn.Module):
    """Generic kuangliu CIFAR ResNet with ``BasicBlock`` stages of ``num_blocks`` blocks.

    Args:
        num_blocks: blocks in each of the four stages (64/128/256/512 channels).
        num_classes: number of output logits (>= 2).
        in_channels: input channels (3 for CIFAR).
        skip: keep the residual shortcuts (False: the thesis' skipless ResNet).
        mean, std: optional per-channel normalisation applied first (see ``Normalize``).

    Takes (N, in_channels, 32, 32) images in [0, 1] and returns (N, num_classes) logits.
    """

    def __init__(
        self,
        num_blocks: Sequence[int] = (2, 2, 2, 2),
        num_classes: int = 10,
        in_channels: int = 3,
        skip: bool = True,
        mean: Optional[Sequence[float]] = None,
        std: Optional[Sequence[float]] = None,
    ) -> None:
        super().__init__()
        blocks = check_positive_ints("num_blocks", num_blocks, length=4)
        self.num_classes = check_num_classes(num_classes)
        self.in_channels = check_in_channels(in_channels)
        if not isinstance(skip, bool):
            raise ValueError(f"skip must be True or False, got {skip!r}")
        self.skip = skip
        self.normalize = Normalize(mean, std, num_channels=self.in_channels)
        self.conv1 = nn.Conv2d(self.in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        in_planes = 64
        stages = []
        for planes, n, stride in zip((64, 128, 256, 512), blocks, (1, 2, 2, 2)):
            layers = []
            for s in [stride] + [1] * (n - 1):
                layers.append(BasicBlock(in_planes, planes, s, skip=skip))
                in_planes = planes * BasicBlock.expansion
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.linear = nn.Linear(512 * BasicBlock.expansion, self.num_classes)

    def forward(self, x: Tensor) -> Tensor:
        check_image_batch(x, self.in_channels, type(self).__name__, exact_size=32)
        out = self.normalize(x)
        out = F.relu(self.bn1(self.conv1(out)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.avg_pool2d(out, 4)
        return self.linear(out.flatten(1))


@register_model("resnet18_noskip", skip=False)
@register_model("resnet18")
class ResNet18(ResNet):
    """kuangliu CIFAR ResNet-18 (about 11.17M parameters for 10 classes).

    Registered as ``resnet18`` and, with ``skip=False``, as ``resnet18_noskip`` (the
    skipless ResNet-18 of thesis table 6.8).
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        skip: bool = True,
        mean: Optional[Sequence[float]] = None,
        std: Optional[Sequence[float]] = None,
    ) -> None:
        super().__init__((2, 2, 2, 2), num_classes=num_classes, in_channels=in_channels, skip=skip, mean=mean, std=std)


@register_model("resnet34")
class ResNet34(ResNet):
    """kuangliu CIFAR ResNet-34 (about 21.28M parameters for 10 classes)."""

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        skip: bool = True,
        mean: Optional[Sequence[float]] = None,
        std: Optional[Sequence[float]] = None,
    ) -> None:
        super().__init__((3, 4, 6, 3), num_classes=num_classes, in_channels=in_channels, skip=skip, mean=mean, std=std)
