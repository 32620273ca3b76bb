"""The CNNs of certified training: Gowal et al. 2018's small / medium / large (the "DM-small /
DM-medium / DM-large" of Zhang et al. 2020, CROWN-IBP), plain chains of Conv2d, ReLU and Linear
that the bounds of :mod:`lightning_adv.certify` walk as they are.

Gowal et al., "On the effectiveness of interval bound propagation", appendix table (``conv c kxk+s``:
c channels, kernel k, stride s)::

    dm_small   conv 16 4x4+2, conv 32 4x4+1, fc 100
    dm_medium  conv 32 3x3+1, conv 32 4x4+2, conv 64 3x3+1, conv 64 4x4+2, fc 512, fc 512
    dm_large   conv 64 3x3+1, conv 64 3x3+1, conv 128 3x3+2, conv 128 3x3+1, conv 128 3x3+1, fc 512

each layer followed by a ReLU and the last by ``linear(num_classes)``. Padding is 1 on every
convolution, as in CROWN-IBP's PyTorch definitions (Gowal et al.'s TensorFlow "SAME" padding of a
4x4 kernel is asymmetric, which ``Conv2d`` has no option for): on 28x28 MNIST dm_small's maps are
14x14 and 13x13 (SAME: 14x14 twice), dm_large's 28, 28, 14, 14, 14. Parameters on MNIST: dm_small
0.55M, dm_medium 1.97M, dm_large 13.3M (its 14x14x128 -> 512 layer is 12.8M of them, as in CROWN-IBP's).
"""
from __future__ import annotations

from typing import Optional, Sequence

from torch import Tensor, nn

from ..validation import check_image_batch, check_in_channels, check_int, check_num_classes
from .normalize import Normalize
from .registry import register_model

__all__ = ["CertifiedCNN", "CERTIFIED_CNN_LAYERS"]

#: per size: convolutions as (channels, kernel, stride), then the hidden fully connected widths
CERTIFIED_CNN_LAYERS: dict[str, tuple[tuple[tuple[int, int, int], ...], tuple[int, ...]]] = {
    "small": (((16, 4, 2), (32, 4, 1)), (100,)),
    "medium": (((32, 3, 1), (32, 4, 2), (64, 3, 1), (64, 4, 2)), (512, 512)),
    "large": (((64, 3, 1), (64, 3, 1), (128, 3, 2), (128, 3, 1), (128, 3, 1)), (512,)),
}


@register_model("dm_small", size="small")
@register_model("dm_medium", size="medium")
@register_model("dm_large", size="large")
class CertifiedCNN(nn.Sequential):
    """Gowal et al.'s ``size`` CNN (see the module docstring) for ``input_size`` x ``input_size`` images.

    An ``nn.Sequential`` (``Normalize`` first, identity by default), so the certified bounds walk it
    layer by layer. Registered as ``dm_small``, ``dm_medium``, ``dm_large``.
    """

    def __init__(self, size: str = "small", num_classes: int = 10, in_channels: int = 1, input_size: int = 28,
                 mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None) -> None:
        if size not in CERTIFIED_CNN_LAYERS:
            raise ValueError(f"size={size!r} is not one of {sorted(CERTIFIED_CNN_LAYERS)}")
        in_channels = check_in_channels(in_channels)
        side = check_int("input_size", input_size, 8, "the side of the square images, 28 for MNIST")
        convs, hidden = CERTIFIED_CNN_LAYERS[size]
        layers: list[nn.Module] = [Normalize(mean, std, num_channels=in_channels)]
        chans = in_channels
        for out, k, s in convs:
            layers += [nn.Conv2d(chans, out, k, stride=s, padding=1), nn.ReLU()]
            chans, side = out, (side + 2 - k) // s + 1
        layers.append(nn.Flatten())
        width = chans * side * side
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, check_num_classes(num_classes)))
        super().__init__(*layers)
        self.size, self.num_classes, self.in_channels, self.input_size = size, num_classes, in_channels, input_size

    @property
    def normalize(self) -> Normalize:
        return self[0]  # type: ignore[return-value]  # built with its Normalize first

    def forward(self, x: Tensor) -> Tensor:
        check_image_batch(x, self.in_channels, f"dm_{self.size}")
        if tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            raise ValueError(f"dm_{self.size} was built for {self.input_size}x{self.input_size} images (input_size), "
                             f"got {tuple(x.shape[-2:])}; pass arch_kwargs: {{input_size: {x.shape[-1]}}}")
        return super().forward(x)
