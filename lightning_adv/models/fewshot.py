"""Few-shot backbones of the adversarial-querying code (thesis chapter 5).

Each backbone maps images in [0, 1] to a flat feature vector (``embed``); the few-shot
head (R2-D2, ProtoNet, MetaOptNet, MAML's linear layer) works on those features. With
``num_classes`` set, a linear classifier is added on top and ``forward`` returns logits,
so the same backbone can be adversarially pre-trained with ``AdvTraining`` on all
meta-training classes (the transfer-learning baseline of table 5.4) and then loaded into
:class:`~lightning_adv.modules.AdversarialQuerying` (``init_weights``; the classifier
weights are dropped). Without ``num_classes``, ``forward`` returns the features.

* ``r2d2_embedding``: the R2-D2 net (Bertinetto et al.) as in the authors' code: four
  blocks ``conv3x3(bias) - BN - maxpool2 - LeakyReLU(0.1)``, 96-192-384-512 channels,
  dropout 0.1 after block 3 and 0.3 after block 4, **no activation after block 4**, and
  the features are ``cat(flatten(block3), flatten(block4))`` (8192-d at 32x32, 51200-d at
  84x84). ``denoise_after`` inserts feature-denoising blocks (Xie et al., table 5.10)
  after the given blocks. The authors' ``--denoise`` was broken (fresh random 1x1 convs
  in every forward, softmax over the batch); here the block is a trained module.
* ``conv4``: the ProtoNet Conv-4, ``[conv3x3(no bias) - BN - act - maxpool2] x 4`` with
  LeakyReLU(0.1) by default (as in AQ; MetaOptNet used ReLU).
* ``resnet12``: MetaOptNet's ResNet-12, 64-160-320-640, LeakyReLU(0.1), 1x1-conv
  shortcuts, max-pool after each block, no average pooling, dropout 0.1 in blocks 1-2
  and DropBlock (size 5 for 84x84 data, 2 for 32x32) in blocks 3-4 (a fixed drop rate:
  the authors' linear ramp over forward calls is not reproduced, see the shared notes).
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..validation import (check_image_batch, check_in_channels, check_int, check_num_classes, check_positive_ints,
                          check_real)
from .normalize import Normalize
from .registry import register_model

__all__ = ["FeatureDenoise", "FewShotBackbone", "R2D2Embedding", "Conv4", "ResNet12", "DropBlock"]


def _activation(name: str) -> nn.Module:
    acts: dict[str, Callable[[], nn.Module]] = {"leaky_relu": lambda: nn.LeakyReLU(0.1), "relu": nn.ReLU, "softplus": nn.Softplus}
    if name not in acts:
        raise ValueError(f"activation={name!r} is not one of {sorted(acts)} (the authors' default is 'leaky_relu')")
    return acts[name]()


def _pooled(size: int, times: int) -> int:
    for _ in range(times):
        size //= 2
    return size


class FeatureDenoise(nn.Module):
    """Feature-denoising block of Xie et al. (2019): non-local means, 1x1 conv, residual.

    ``y = x + BN(conv1x1(sum_j softmax_j(theta(x_i) . phi(x_j)) x_j))`` (embedded-Gaussian
    weights over all spatial positions of one feature map). The BN weight starts at zero,
    so a fresh block is the identity, as Xie et al. initialise it.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        inner = max(channels // 2, 1)
        self.theta = nn.Conv2d(channels, inner, 1, bias=False)
        self.phi = nn.Conv2d(channels, inner, 1, bias=False)
        self.proj = nn.Conv2d(channels, channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        nn.init.zeros_(self.bn.weight)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        theta = self.theta(x).flatten(2)  # (B, C', HW)
        phi = self.phi(x).flatten(2)
        weights = torch.softmax(theta.transpose(1, 2) @ phi / theta.shape[1] ** 0.5, dim=-1)  # (B, HW, HW)
        means = (x.flatten(2) @ weights.transpose(1, 2)).view(b, c, h, w)
        return x + self.bn(self.proj(means))


class FewShotBackbone(nn.Module):
    """Common part: normalisation first, ``embed`` to flat features, optional classifier."""

    def __init__(self, in_channels: int, mean: Optional[Sequence[float]], std: Optional[Sequence[float]],
                 num_classes: Optional[int], input_size: int) -> None:
        super().__init__()
        self.in_channels = check_in_channels(in_channels)
        self.input_size = check_int("input_size", input_size, 8, "the side length of the images, e.g. 28, 32 or 84")
        self.normalize = Normalize(mean, std, num_channels=self.in_channels)
        self.num_classes = None if num_classes is None else check_num_classes(num_classes)

    def _build_classifier(self) -> None:
        self.classifier = (nn.Linear(self.feature_dim(self.input_size), self.num_classes)
                           if self.num_classes is not None else None)

    def feature_dim(self, size: int) -> int:
        raise NotImplementedError

    def _features(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def embed(self, x: Tensor) -> Tensor:
        """Flat features of a batch of images in [0, 1], shape (N, feature_dim)."""
        check_image_batch(x, self.in_channels, type(self).__name__, min_size=8)
        return self._features(self.normalize(x))

    def forward(self, x: Tensor) -> Tensor:
        feats = self.embed(x)
        return feats if self.classifier is None else self.classifier(feats)


@register_model("r2d2_embedding")
class R2D2Embedding(FewShotBackbone):
    """The R2-D2 4-block conv net (96-192-384-512), see the module docstring.

    Args:
        in_channels: image channels (3 for Mini-ImageNet / CIFAR-FS, 1 for Omniglot).
        channels: the four widths (authors: 96, 192, 384, 512).
        dropout: dropout after blocks 3 and 4 (authors: 0.1, 0.3).
        activation: 'leaky_relu' (authors, slope 0.1), 'relu' or 'softplus'.
        denoise_after: 1-based blocks followed by a :class:`FeatureDenoise` block
            (table 5.10: ``[4]``).
        num_classes: add a linear classifier with this many outputs (transfer learning).
        input_size: image side, used to size the classifier (84 Mini-ImageNet, 32 CIFAR-FS).
        mean, std: normalisation inside the model (None: identity, as the authors).
    """

    def __init__(
        self,
        in_channels: int = 3,
        channels: Sequence[int] = (96, 192, 384, 512),
        dropout: Sequence[float] = (0.1, 0.3),
        activation: str = "leaky_relu",
        denoise_after: Sequence[int] = (),
        num_classes: Optional[int] = None,
        input_size: int = 84,
        mean: Optional[Sequence[float]] = None,
        std: Optional[Sequence[float]] = None,
    ) -> None:
        super().__init__(in_channels, mean, std, num_classes, input_size)
        self.channels = check_positive_ints("channels", channels, length=4)
        if len(dropout) != 2 or any(not 0 <= p < 1 for p in dropout):
            raise ValueError(f"dropout must be two probabilities in [0, 1) (after blocks 3 and 4), got {dropout!r}")
        bad = [b for b in denoise_after if b not in (1, 2, 3, 4)]
        if bad:
            raise ValueError(f"denoise_after must list blocks among 1, 2, 3, 4, "
                             f"got denoise_after={list(denoise_after)}")
        _activation(activation)
        blocks = []
        width = self.in_channels
        for i, out in enumerate(self.channels):
            layers: list[nn.Module] = [nn.Conv2d(width, out, 3, padding=1), nn.BatchNorm2d(out), nn.MaxPool2d(2)]
            if i < 3:
                layers.append(_activation(activation))
            if i >= 2:
                layers.append(nn.Dropout(float(dropout[i - 2])))
            if i + 1 in denoise_after:
                layers.append(FeatureDenoise(out))
            blocks.append(nn.Sequential(*layers))
            width = out
        self.block1, self.block2, self.block3, self.block4 = blocks
        self._build_classifier()

    def feature_dim(self, size: int) -> int:
        return self.channels[2] * _pooled(size, 3) ** 2 + self.channels[3] * _pooled(size, 4) ** 2

    def _features(self, x: Tensor) -> Tensor:
        b3 = self.block3(self.block2(self.block1(x)))
        b4 = self.block4(b3)
        return torch.cat([b3.flatten(1), b4.flatten(1)], dim=1)


@register_model("conv4")
class Conv4(FewShotBackbone):
    """ProtoNet Conv-4: ``[conv3x3(no bias) - BN - act - maxpool2] x 4``, ``width`` channels.

    64 channels give 1600-d features at 84x84 and 64-d at 28x28. Init N(0, sqrt(2/(9*w)))
    as in the authors' code.
    """

    def __init__(
        self,
        in_channels: int = 3,
        width: int = 64,
        activation: str = "leaky_relu",
        num_classes: Optional[int] = None,
        input_size: int = 84,
        mean: Optional[Sequence[float]] = None,
        std: Optional[Sequence[float]] = None,
    ) -> None:
        super().__init__(in_channels, mean, std, num_classes, input_size)
        self.width = check_int("width", width, 1, "the authors use width=64")
        _activation(activation)
        layers: list[nn.Module] = []
        c = self.in_channels
        for _ in range(4):
            conv = nn.Conv2d(c, self.width, 3, padding=1, bias=False)
            nn.init.normal_(conv.weight, 0.0, (2.0 / (9 * self.width)) ** 0.5)
            layers += [conv, nn.BatchNorm2d(self.width), _activation(activation), nn.MaxPool2d(2)]
            c = self.width
        self.encoder = nn.Sequential(*layers)
        self._build_classifier()

    def feature_dim(self, size: int) -> int:
        return self.width * _pooled(size, 4) ** 2

    def _features(self, x: Tensor) -> Tensor:
        return self.encoder(x).flatten(1)


class DropBlock(nn.Module):
    """DropBlock (Ghiasi et al.): drop ``block_size`` x ``block_size`` squares of a map.

    ``drop_rate`` is the fraction of units dropped (fixed, no ramp); identity in eval mode.
    """

    def __init__(self, drop_rate: float, block_size: int) -> None:
        super().__init__()
        self.drop_rate = float(drop_rate)
        self.block_size = int(block_size)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.drop_rate == 0:
            return x
        _, _, h, w = x.shape
        bs = min(self.block_size, h, w)
        gamma = self.drop_rate / bs ** 2 * (h * w) / max((h - bs + 1) * (w - bs + 1), 1)
        seeds = (torch.rand_like(x) < gamma).to(x.dtype)
        mask = 1 - F.max_pool2d(seeds, kernel_size=bs, stride=1, padding=bs // 2)[:, :, :h, :w]
        return x * mask * mask.numel() / mask.sum().clamp_min(1.0)


class _ResBlock12(nn.Module):
    def __init__(self, cin: int, cout: int, drop: nn.Module) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout)
        self.conv3, self.bn3 = nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.act = nn.LeakyReLU(0.1)
        self.pool = nn.MaxPool2d(2)
        self.drop = drop

    def forward(self, x: Tensor) -> Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        out = self.act(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.drop(self.pool(self.act(out + self.shortcut(x))))


@register_model("resnet12")
class ResNet12(FewShotBackbone):
    """MetaOptNet's ResNet-12 (64-160-320-640), see the module docstring.

    Args:
        drop_rate: dropout of blocks 1-2 and DropBlock rate of blocks 3-4 (authors: 0.1).
        dropblock_size: 5 for 84x84 data, 2 for 32x32 (authors).
    """

    def __init__(
        self,
        in_channels: int = 3,
        channels: Sequence[int] = (64, 160, 320, 640),
        drop_rate: float = 0.1,
        dropblock_size: int = 5,
        num_classes: Optional[int] = None,
        input_size: int = 84,
        mean: Optional[Sequence[float]] = None,
        std: Optional[Sequence[float]] = None,
    ) -> None:
        super().__init__(in_channels, mean, std, num_classes, input_size)
        self.channels = check_positive_ints("channels", channels, length=4)
        check_real("drop_rate", drop_rate, minimum=0.0, maximum=1.0, below_max=True)
        check_int("dropblock_size", dropblock_size, 1, "authors: 5 for 84x84 images, 2 for 32x32")
        widths = (self.in_channels, *self.channels)
        blocks = []
        for i in range(4):
            drop: nn.Module = nn.Dropout(drop_rate) if i < 2 else DropBlock(drop_rate, dropblock_size)
            blocks.append(_ResBlock12(widths[i], widths[i + 1], drop))
        self.layers = nn.Sequential(*blocks)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="leaky_relu")
        self._build_classifier()

    def feature_dim(self, size: int) -> int:
        return self.channels[3] * _pooled(size, 4) ** 2

    def _features(self, x: Tensor) -> Tensor:
        return self.layers(x).flatten(1)
