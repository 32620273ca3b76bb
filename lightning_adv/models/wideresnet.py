"""The TRADES WideResNet (the ARD teacher), with TRADES state-dict keys.

The authors' definition (TRADES ``models/wideresnet.py``, copied verbatim into ARD):

* 3x3 conv stem to 16 channels, then three groups (``block1``, ``block2``, ``block3``) of
  ``n = (depth - 4) / 6`` pre-activation ``BasicBlock``\\ s with 16k/32k/64k channels
  (k = ``widen_factor``), strides 1/2/2; WRN-34-10: n = 5, channels 160/320/640;
* a block computes ``o = relu(bn1(x))``, ``y = conv2(dropout(relu(bn2(conv1(o)))))`` and
  returns ``y + x`` when in == out channels, else ``y + convShortcut(o)`` (1x1 conv on the
  *activated* input);
* final ``bn1``, ReLU, ``avg_pool2d(8)``, ``fc``;
* init: conv weights N(0, sqrt(2 / (k*k*out_channels))), BN weight 1 / bias 0, fc bias 0
  (fc weight keeps PyTorch's default);
* an **unused** ``sub_block1`` (a copy of ``block1`` built in ``__init__`` but never called
  in ``forward``). It exists only in the state dict; released TRADES checkpoints contain
  its keys, so it must exist for ``strict=True`` loading. WRN-34-10 has 48.26M parameters
  with it and 46.16M used ones.

Keys are exactly TRADES' (``conv1``, ``block1.layer.0.bn1``, ``block1.layer.0.convShortcut``,
``sub_block1.*``, ``block2.*``, ``block3.*``, ``bn1``, ``fc``).

Deliberate differences from the authors' code:

* ``sub_block1``'s parameters have ``requires_grad=False``. They never receive a gradient,
  and DDP with ``find_unused_parameters=False`` would otherwise fail on them; optimisers
  skip them either way. (Calling ``model.requires_grad_(True)`` turns them back on.)
* no in-place ReLUs (``torch.func`` friendliness); identical numbers;
* ``self.normalize`` first (identity by default), configurable ``in_channels``, and a clear
  error for inputs that are not 32x32.
"""
from __future__ import annotations

import math
import numbers
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._checks import check_image_batch, check_in_channels, check_int, check_num_classes
from .normalize import Normalize
from .registry import register_model

__all__ = ["WideBasicBlock", "NetworkBlock", "WideResNet"]


class WideBasicBlock(nn.Module):
    """TRADES pre-activation ``BasicBlock`` (attribute names kept for the state-dict keys)."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0,
                 batchnorm: bool = True, skip: bool = True) -> None:
        super().__init__()
        norm = nn.BatchNorm2d if batchnorm else (lambda _c: nn.Identity())
        self.bn1 = norm(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = norm(out_planes)
        self.conv2 = nn.Conv2d(out_planes, out_planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.drop_rate = drop_rate
        self.skip = skip
        self.equal_in_out = in_planes == out_planes
        self.convShortcut: Optional[nn.Conv2d] = (
            None
            if self.equal_in_out or not skip
            else nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, padding=0, bias=False)
        )

    def forward(self, x: Tensor) -> Tensor:
        o = F.relu(self.bn1(x))
        out = F.relu(self.bn2(self.conv1(o)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        out = self.conv2(out)
        if not self.skip:
            return out
        shortcut = x if self.convShortcut is None else self.convShortcut(o)
        return shortcut + out


class NetworkBlock(nn.Module):
    """A group of ``nb_layers`` blocks; the first one changes width/stride (``.layer`` keys)."""

    def __init__(self, nb_layers: int, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0,
                 batchnorm: bool = True, skip: bool = True) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            *[
                WideBasicBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, drop_rate,
                               batchnorm, skip)
                for i in range(nb_layers)
            ]
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)


@register_model("wideresnet_noskip", skip=False)
@register_model("wideresnet_nobn", batchnorm=False)
@register_model("wrn34_10", depth=34, widen_factor=10)
@register_model("wideresnet")
class WideResNet(nn.Module):
    """TRADES WideResNet-``depth``-``widen_factor`` (see the module docstring).

    Args:
        depth: total depth; ``(depth - 4)`` must be a multiple of 6 (10, 16, 22, 28, 34, ...).
        widen_factor: channel multiplier k (>= 1).
        drop_rate: dropout probability inside each block, in [0, 1) (TRADES/ARD: 0).
        num_classes: number of output logits (>= 2).
        in_channels: input channels (3 for CIFAR).
        mean, std: optional per-channel normalisation applied first (see ``Normalize``).
        batchnorm: False replaces every BatchNorm by the identity (thesis figure 6.5,
            "WideResNet without batch normalization"; no BN keys in the state dict).
        skip: False drops every shortcut, identity and 1x1 projection alike (figure 6.5,
            "without skip connections").

    Takes (N, in_channels, 32, 32) images in [0, 1] and returns (N, num_classes) logits.
    Registered as ``wideresnet``, with depth 34 and widen factor 10 as ``wrn34_10``, and
    as ``wideresnet_nobn`` / ``wideresnet_noskip`` for the two variants of figure 6.5.
    """

    def __init__(
        self,
        depth: int = 34,
        widen_factor: int = 10,
        drop_rate: float = 0.0,
        num_classes: int = 10,
        in_channels: int = 3,
        mean: Optional[Sequence[float]] = None,
        std: Optional[Sequence[float]] = None,
        batchnorm: bool = True,
        skip: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(batchnorm, bool) or not isinstance(skip, bool):
            raise ValueError(f"batchnorm and skip must be True or False, got batchnorm={batchnorm!r}, skip={skip!r}")
        self.batchnorm, self.skip = batchnorm, skip
        depth = check_int("depth", depth, 10, "use 10, 16, 22, 28, 34, ... ((depth - 4) divisible by 6)")
        if (depth - 4) % 6 != 0:
            lo = depth - (depth - 4) % 6
            raise ValueError(
                f"depth must satisfy (depth - 4) % 6 == 0, got depth={depth}; nearest valid: {lo} or {lo + 6}"
            )
        self.depth = depth
        self.widen_factor = check_int("widen_factor", widen_factor, 1, "TRADES/ARD use widen_factor=10")
        if isinstance(drop_rate, bool) or not isinstance(drop_rate, (numbers.Real, float)) or not 0.0 <= float(drop_rate) < 1.0:
            raise ValueError(f"drop_rate must be a probability in [0, 1), got {drop_rate!r}; TRADES/ARD use 0.0")
        self.drop_rate = float(drop_rate)
        self.num_classes = check_num_classes(num_classes)
        self.in_channels = check_in_channels(in_channels)
        n = (depth - 4) // 6
        channels = [16, 16 * self.widen_factor, 32 * self.widen_factor, 64 * self.widen_factor]
        self.nChannels = channels[3]

        self.normalize = Normalize(mean, std, num_channels=self.in_channels)
        self.conv1 = nn.Conv2d(self.in_channels, channels[0], kernel_size=3, stride=1, padding=1, bias=False)
        variant = (batchnorm, skip)
        self.block1 = NetworkBlock(n, channels[0], channels[1], 1, self.drop_rate, *variant)
        # Unused in forward (as in TRADES); kept so that TRADES checkpoints load strictly.
        self.sub_block1 = NetworkBlock(n, channels[0], channels[1], 1, self.drop_rate, *variant)
        self.block2 = NetworkBlock(n, channels[1], channels[2], 2, self.drop_rate, *variant)
        self.block3 = NetworkBlock(n, channels[2], channels[3], 2, self.drop_rate, *variant)
        self.bn1 = nn.BatchNorm2d(channels[3]) if batchnorm else nn.Identity()
        self.fc = nn.Linear(channels[3], self.num_classes)
        self._init_weights()
        self.sub_block1.requires_grad_(False)

    @torch.no_grad()
    def _init_weights(self) -> None:
        """The TRADES initialisation (see the module docstring)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                m.weight.normal_(0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.fill_(1.0)
                m.bias.zero_()
            elif isinstance(m, nn.Linear):
                m.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        check_image_batch(x, self.in_channels, type(self).__name__, exact_size=32)
        out = self.normalize(x)
        out = self.conv1(out)
        out = self.block3(self.block2(self.block1(out)))
        out = F.relu(self.bn1(out))
        out = F.avg_pool2d(out, 8)
        return self.fc(out.flatten(1))
