"""Small models for fast experiments and CPU tests: a small CNN and a configurable MLP.

These are this project's own definitions (the thesis' chapter-6 experiments on
MNIST-scale data and the CPU quickstart need something that trains in seconds); they do
not reproduce a particular authors' file.
"""
from __future__ import annotations

from typing import Optional, Sequence

from torch import Tensor, nn

from ..validation import check_image_batch, check_in_channels, check_int, check_num_classes, check_positive_ints
from .normalize import Normalize
from .registry import register_model

__all__ = ["SmallCNN", "MLP", "ACTIVATIONS"]

#: Activation names accepted by :class:`MLP`.
ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}


@register_model("small_cnn")
class SmallCNN(nn.Module):
    """A three-conv CNN for small grey images (8x8 scikit-learn digits, 28x28 MNIST, ...).

    With ``w = width``::

        conv3x3(in, w) - ReLU - conv3x3(w, 2w) - ReLU - maxpool2
        - conv3x3(2w, 4w) - ReLU - AdaptiveAvgPool(2) - flatten
        - linear(16w, 8w) - ReLU - linear(8w, num_classes)

    (``width=32``: 32/64/128 channels, a 512-256 classifier). The adaptive pooling makes
    the classifier independent of the input size; inputs must be at least 4x4 so that the
    pooled map is not up-sampled. No BatchNorm, so per-sample ``torch.func`` transforms
    (``vmap`` of ``grad``) work in train mode too.

    Args:
        num_classes: number of output logits (>= 2).
        in_channels: input channels (1 for grey images).
        width: channel multiplier ``w`` (>= 1).
        mean, std: optional per-channel normalisation applied first (see ``Normalize``).
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        width: int = 32,
        mean: Optional[Sequence[float]] = None,
        std: Optional[Sequence[float]] = None,
    ) -> None:
        super().__init__()
        self.num_classes = check_num_classes(num_classes)
        self.in_channels = check_in_channels(in_channels)
        w = self.width = check_int("width", width, 1, "the default is width=32")
        self.normalize = Normalize(mean, std, num_channels=self.in_channels)
        self.features = nn.Sequential(
            nn.Conv2d(self.in_channels, w, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(w, 2 * w, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 4 * w, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
        )
        self.classifier = nn.Sequential(
            nn.Linear(16 * w, 8 * w),
            nn.ReLU(),
            nn.Linear(8 * w, self.num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        check_image_batch(x, self.in_channels, type(self).__name__, min_size=4)
        return self.classifier(self.features(self.normalize(x)))


@register_model("mlp")
class MLP(nn.Module):
    """A fully connected network on flattened ``in_channels x input_size x input_size`` images.

    ``flatten - [linear - activation] * len(hidden) - linear(num_classes)``, so the depth
    (number of linear layers) is ``len(hidden) + 1``; ``hidden=()`` is a linear model.

    Args:
        input_size: side length of the square input images (8 for digits, 28 for MNIST,
            32 for CIFAR).
        num_classes: number of output logits (>= 2).
        in_channels: input channels (1 for grey images).
        hidden: widths of the hidden layers, each >= 1.
        activation: ``"relu"``, ``"tanh"`` or ``"gelu"``.
        mean, std: optional per-channel normalisation applied first (see ``Normalize``).

    The input must have shape (N, in_channels, input_size, input_size).
    """

    def __init__(
        self,
        input_size: int,
        num_classes: int = 10,
        in_channels: int = 1,
        hidden: Sequence[int] = (256, 256),
        activation: str = "relu",
        mean: Optional[Sequence[float]] = None,
        std: Optional[Sequence[float]] = None,
    ) -> None:
        super().__init__()
        self.input_size = check_int("input_size", input_size, 1, "the side length of the images, e.g. 8, 28 or 32")
        self.num_classes = check_num_classes(num_classes)
        self.in_channels = check_in_channels(in_channels)
        self.hidden = check_positive_ints("hidden", hidden, allow_empty=True)
        if not isinstance(activation, str) or activation.lower() not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.activation = activation.lower()
        self.normalize = Normalize(mean, std, num_channels=self.in_channels)
        layers: list[nn.Module] = [nn.Flatten()]
        width = self.in_channels * self.input_size * self.input_size
        for h in self.hidden:
            layers += [nn.Linear(width, h), ACTIVATIONS[self.activation]()]
            width = h
        layers.append(nn.Linear(width, self.num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        expected = (self.in_channels, self.input_size, self.input_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"MLP(input_size={self.input_size}, in_channels={self.in_channels}) expects inputs of shape "
                f"(N, {', '.join(map(str, expected))}), got {tuple(x.shape)}; build it with the input_size and "
                f"in_channels of the data"
            )
        return self.layers(self.normalize(x))
