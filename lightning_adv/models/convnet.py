"""The 6-layer ConvNet width family of the NTK experiment (thesis section 6.4, figure 6.1).

"6-Layer, Convolutions, ReLU, MaxPooling": five 3x3 convolutions and a linear layer, the
width multiplying every channel count::

    conv(w) - ReLU - conv(2w) - ReLU - maxpool2 - conv(2w) - ReLU - conv(4w) - ReLU - maxpool2
    - conv(4w) - ReLU - AdaptiveMaxPool(1) - linear(4w, classes)

This project's definition (the thesis gives no more detail); no BatchNorm.
"""
from __future__ import annotations

from typing import Optional, Sequence

from torch import Tensor, nn

from ..validation import check_image_batch, check_in_channels, check_int, check_num_classes
from .normalize import Normalize
from .registry import register_model

__all__ = ["ConvNet6"]


@register_model("convnet6")
class ConvNet6(nn.Module):
    """Six-layer ConvNet of width ``width`` (see the module docstring); inputs at least 4x4."""

    def __init__(self, width: int = 16, num_classes: int = 10, in_channels: int = 3,
                 mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None) -> None:
        super().__init__()
        w = self.width = check_int("width", width, 1, "the NTK sweep uses widths 4 to 256")
        self.num_classes = check_num_classes(num_classes)
        self.in_channels = check_in_channels(in_channels)
        self.normalize = Normalize(mean, std, num_channels=self.in_channels)
        chans = [self.in_channels, w, 2 * w, 2 * w, 4 * w, 4 * w]
        layers: list[nn.Module] = []
        for i in range(5):
            layers += [nn.Conv2d(chans[i], chans[i + 1], kernel_size=3, padding=1), nn.ReLU()]
            if i in (1, 3):
                layers.append(nn.MaxPool2d(2))
        layers += [nn.AdaptiveMaxPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(4 * w, self.num_classes)

    def forward(self, x: Tensor) -> Tensor:
        check_image_batch(x, self.in_channels, type(self).__name__, min_size=4)
        return self.fc(self.features(self.normalize(x)))
