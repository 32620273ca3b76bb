"""The generative models of DefenseGAN: a DCGAN-style generator and critic for small images.

Samangouei et al. trained a WGAN-GP (critic iterations 5, gradient penalty 10) with a DCGAN-shaped
generator on MNIST / Fashion-MNIST, generator output in [0, 1] for those data sets (their
``INPUT_TRANSFORM_TYPE: 1``). This module builds that class of model for any square image size
divisible by 4: ``z -> linear -> (2w, s, s) -> 2 x [upsample x2] -> (C, 4s, 4s)`` with BatchNorm and
ReLU, sigmoid output (pixels in [0, 1], like every image of this project). The critic mirrors it
with strided convolutions and LeakyReLU, without BatchNorm (the gradient penalty is per example, as
in Gulrajani et al.'s critic).

The thesis used a stronger ProGAN generator for CIFAR-100 (section 5.5); progressive growing is not
implemented here: the CIFAR config uses a wider generator of the same shape (a documented deviation).
"""
from __future__ import annotations

from torch import Tensor, nn

from ..validation import check_int

__all__ = ["Generator", "Critic", "GAN_LOSSES"]

GAN_LOSSES = ("wgan-gp", "dcgan")


def _check_size(image_size: int, in_channels: int, latent_dim: int, width: int) -> None:
    for name, value, minimum in (("image_size", image_size, 8), ("in_channels", in_channels, 1),
                                 ("latent_dim", latent_dim, 1), ("width", width, 1)):
        check_int(name, value, minimum)
    if image_size % 4:
        raise ValueError(f"image_size={image_size} must be divisible by 4 (two x2 upsamplings), e.g. 20, 28 or 32")


class Generator(nn.Module):
    """``G: (N, latent_dim) -> (N, in_channels, image_size, image_size)`` in [0, 1].

    Args:
        latent_dim: size of ``z`` (drawn from N(0, I)).
        image_size: side of the square output, divisible by 4.
        in_channels: 1 (grey) or 3 (RGB).
        width: channels of the last hidden layer (the first has ``2 * width``).
    """

    def __init__(self, latent_dim: int = 64, image_size: int = 28, in_channels: int = 1, width: int = 64) -> None:
        super().__init__()
        _check_size(image_size, in_channels, latent_dim, width)
        self.latent_dim, self.image_size, self.in_channels = latent_dim, image_size, in_channels
        s = image_size // 4
        self.base = s
        self.fc = nn.Sequential(nn.Linear(latent_dim, 2 * width * s * s), nn.BatchNorm1d(2 * width * s * s), nn.ReLU())
        self.net = nn.Sequential(
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.ConvTranspose2d(width, in_channels, 4, 2, 1), nn.Sigmoid())
        self.width = width

    @property
    def output_shape(self) -> tuple[int, int, int]:
        return (self.in_channels, self.image_size, self.image_size)

    def forward(self, z: Tensor) -> Tensor:
        h = self.fc(z).view(z.shape[0], 2 * self.width, self.base, self.base)
        return self.net(h)


class Critic(nn.Module):
    """The discriminator (a WGAN critic: one unbounded score per image; DCGAN: the logit of 'real')."""

    def __init__(self, image_size: int = 28, in_channels: int = 1, width: int = 64) -> None:
        super().__init__()
        _check_size(image_size, in_channels, 1, width)
        s = image_size // 4
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, width, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Flatten(), nn.Linear(2 * width * s * s, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).squeeze(1)
