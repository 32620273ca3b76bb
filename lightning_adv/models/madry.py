"""The MNIST CNN of Madry et al. 2018 ("Towards deep learning models resistant to adversarial
attacks"; their ``mnist_challenge/model.py``).

    conv5x5(in, 32, SAME) - ReLU - maxpool2 - conv5x5(32, 64, SAME) - ReLU - maxpool2
    - flatten - linear(7*7*64, 1024) - ReLU - linear(1024, num_classes)

TensorFlow's SAME padding of a 5x5 stride-1 convolution is zero padding 2 on each side, so
28x28 inputs give 7x7x64 features. Their challenge model trains it with PGD-40 (step 0.01,
Linf eps 0.3, random start), Adam 1e-4, batch 50, 100k iterations (``configs/madry_at_mnist.yaml``).
"""
from __future__ import annotations

from typing import Optional, Sequence

from torch import Tensor, nn

from ..validation import check_image_batch, check_in_channels, check_int, check_num_classes
from .normalize import Normalize
from .registry import register_model

__all__ = ["MadryCNN"]


@register_model("madry_cnn")
class MadryCNN(nn.Module):
    """Madry et al.'s MNIST CNN (3.27M parameters on 28x28 inputs; see the module docstring).

    Args:
        num_classes: number of output logits (>= 2).
        in_channels: input channels (1 for MNIST).
        input_size: side length of the square inputs (28 for MNIST; divisible by 4).
        mean, std: optional per-channel normalisation applied first (none in their code).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, input_size: int = 28,
                 mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None) -> None:
        super().__init__()
        self.num_classes = check_num_classes(num_classes)
        self.in_channels = check_in_channels(in_channels)
        self.input_size = check_int("input_size", input_size, 4, "the side of the images, 28 for MNIST")
        if self.input_size % 4:
            raise ValueError(f"MadryCNN: input_size must be divisible by 4 (two 2x2 poolings), got "
                             f"input_size={input_size}; MNIST is 28")
        side = self.input_size // 4
        self.normalize = Normalize(mean, std, num_channels=self.in_channels)
        self.features = nn.Sequential(
            nn.Conv2d(self.in_channels, 32, kernel_size=5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, kernel_size=5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.classifier = nn.Sequential(nn.Linear(side * side * 64, 1024), nn.ReLU(), nn.Linear(1024, self.num_classes))

    def forward(self, x: Tensor) -> Tensor:
        check_image_batch(x, self.in_channels, type(self).__name__, exact_size=self.input_size)
        return self.classifier(self.features(self.normalize(x)))
