"""Training the purifiers of thesis section 5.5 through the CLI
(``python train.py fit --config configs/purifier_defensegan_omniglot.yaml``).

* :class:`GANTraining`: DefenseGAN's generator, WGAN-GP (Gulrajani et al.; Samangouei et al.'s choice:
  5 critic updates per generator update, gradient penalty 10, Adam 1e-4, betas (0.5, 0.9)) or the
  DCGAN loss (one critic update per generator update). Manual optimisation: every batch updates the
  critic, every ``critic_iters``-th batch also the generator. Validation: the mean squared error of
  DefenseGAN's projection of held-out images onto the generator's range (``val/rec_mse``, a cheaper
  projection than at test time: ``val_restarts`` x ``val_steps``).
* :class:`SRTraining`: the SRResNet on ``(degraded, clean)`` pairs of the data: area downsampling by
  ``scale`` (the defense applies it to the native image and averages back), optional Gaussian noise;
  MSE loss (SRResNet-MSE, Ledig et al.), Adam. Validation: ``val/mse``, ``val/psnr`` and the bilinear
  upsampler's ``val/mse_bilinear`` for reference.

The datamodule yields ``(images, labels)`` (labels unused): ``MetaTrainClassification`` over a few-shot
data set (its meta-training classes), or a classification datamodule (CIFAR-100, as the thesis).
Checkpoints load with ``weights_only=True`` (:func:`~lightning_adv.defenses.load_generator`,
:func:`~lightning_adv.defenses.load_sr_net`).
"""
from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor

from ..defenses import GAN_LOSSES, Critic, DefenseGAN, Generator, SRResNet
from ..validation import check_int, check_real

__all__ = ["GANTraining", "SRTraining"]


def _check_data(module: pl.LightningModule, image_size: int, in_channels: int) -> None:
    dm = getattr(module.trainer, "datamodule", None) if module._trainer is not None else None
    shape = getattr(dm, "input_shape", None)
    if shape is not None and (shape[0] != in_channels or shape[1] != image_size or shape[2] != image_size):
        raise ValueError(f"model.in_channels={in_channels}, model.image_size={image_size} but the data "
                         f"({type(dm).__name__}) has images of shape {tuple(shape)}; set --model.in_channels "
                         f"{shape[0]} --model.image_size {shape[1]}")


class GANTraining(pl.LightningModule):
    """Train DefenseGAN's generator.

    Args:
        image_size, in_channels: the images (checked against the datamodule).
        latent_dim, gen_width, critic_width: model sizes (:class:`~lightning_adv.defenses.Generator`).
        loss: 'wgan-gp' (Samangouei et al.) or 'dcgan'.
        critic_iters: critic updates per generator update (WGAN-GP: 5; DCGAN: 1).
        gp_weight: gradient-penalty weight (WGAN-GP: 10).
        lr, beta1, beta2: Adam for both nets (WGAN-GP: 1e-4, 0.5, 0.9; DCGAN: 2e-4, 0.5, 0.999).
        val_restarts, val_steps, val_images: the validation projection.
    """

    def __init__(self, image_size: int = 28, in_channels: int = 1, latent_dim: int = 64, gen_width: int = 64,
                 critic_width: int = 64, loss: str = "wgan-gp", critic_iters: int = 5, gp_weight: float = 10.0,
                 lr: float = 1e-4, beta1: float = 0.5, beta2: float = 0.9, val_restarts: int = 2, val_steps: int = 50,
                 val_images: int = 64) -> None:
        super().__init__()
        if loss not in GAN_LOSSES:
            raise ValueError(f"loss={loss!r} must be one of {GAN_LOSSES} (Samangouei et al.: 'wgan-gp')")
        for name, value in (("critic_iters", critic_iters), ("val_restarts", val_restarts),
                            ("val_steps", val_steps), ("val_images", val_images)):
            check_int(name, value, 1)
        check_real("lr", lr, positive=True)
        for name, beta in (("beta1", beta1), ("beta2", beta2)):  # Adam's betas: torch would not name them
            check_real(name, beta, minimum=0.0, maximum=1.0, below_max=True,
                       hint="Adam's moment decay; WGAN-GP: beta1 0.5, beta2 0.9")
        check_real("gp_weight", gp_weight, minimum=0.0)
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.generator = Generator(latent_dim, image_size, in_channels, gen_width)
        self.critic = Critic(image_size, in_channels, critic_width)

    def setup(self, stage: str) -> None:
        _check_data(self, self.hparams.image_size, self.hparams.in_channels)

    def forward(self, z: Tensor) -> Tensor:
        return self.generator(z)

    def _z(self, n: int, like: Tensor) -> Tensor:
        return torch.randn(n, self.hparams.latent_dim, device=like.device, dtype=like.dtype)

    def _critic_loss(self, real: Tensor, fake: Tensor) -> Tensor:
        d_real, d_fake = self.critic(real), self.critic(fake)
        if self.hparams.loss == "dcgan":
            return (F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
                    + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake)))
        alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
        mix = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
        (grad,) = torch.autograd.grad(self.critic(mix).sum(), mix, create_graph=True)
        penalty = (grad.flatten(1).norm(dim=1) - 1).pow(2).mean()
        self.log("train/wasserstein", (d_real.mean() - d_fake.mean()).detach(), on_step=False, on_epoch=True)
        return d_fake.mean() - d_real.mean() + self.hparams.gp_weight * penalty

    def _generator_loss(self, fake: Tensor) -> Tensor:
        d_fake = self.critic(fake)
        if self.hparams.loss == "dcgan":
            return F.binary_cross_entropy_with_logits(d_fake, torch.ones_like(d_fake))
        return -d_fake.mean()

    def training_step(self, batch: Any, batch_idx: int) -> None:
        real = batch[0]
        opt_g, opt_d = self.optimizers()
        fake = self.generator(self._z(real.shape[0], real)).detach()
        d_loss = self._critic_loss(real, fake)
        opt_d.zero_grad()
        self.manual_backward(d_loss)
        opt_d.step()
        self.log("train/d_loss", d_loss.detach(), on_step=True, on_epoch=True)
        if (batch_idx + 1) % self.hparams.critic_iters == 0:
            g_loss = self._generator_loss(self.generator(self._z(real.shape[0], real)))
            opt_g.zero_grad()
            self.manual_backward(g_loss)
            opt_g.step()
            self.log("train/g_loss", g_loss.detach(), on_step=True, on_epoch=True, prog_bar=True)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        if batch_idx > 0:
            return
        hp = self.hparams
        x = batch[0][: hp.val_images]
        projection = DefenseGAN(self.generator, restarts=hp.val_restarts, steps=hp.val_steps)
        _, err, _ = projection.project(x)
        self.log("val/rec_mse", err.mean(), prog_bar=True)

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        betas = (hp.beta1, hp.beta2)
        return (torch.optim.Adam(self.generator.parameters(), lr=hp.lr, betas=betas),
                torch.optim.Adam(self.critic.parameters(), lr=hp.lr, betas=betas))


class SRTraining(pl.LightningModule):
    """Train the SR defense's SRResNet on ``(area-downsampled [+ noise], clean)`` pairs.

    Args:
        image_size, in_channels: the clean images (checked against the datamodule; divisible by ``scale``).
        scale: the super-resolution factor (the authors' defense: 2).
        sr_width, sr_blocks: SRResNet size (Ledig et al.: 64, 16).
        noise_std: Gaussian noise added to the low-resolution input (0: none).
        lr: Adam learning rate (Ledig et al.: 1e-4).
    """

    def __init__(self, image_size: int = 28, in_channels: int = 1, scale: int = 2, sr_width: int = 64,
                 sr_blocks: int = 16, noise_std: float = 0.0, lr: float = 1e-4) -> None:
        super().__init__()
        self.net = SRResNet(in_channels, scale, sr_width, sr_blocks)
        if image_size % scale:
            raise ValueError(f"image_size={image_size} must be divisible by scale={scale} (the training pairs are "
                             f"area-downsampled by scale)")
        check_real("noise_std", noise_std, minimum=0.0)
        check_real("lr", lr, positive=True)
        self.save_hyperparameters()

    def setup(self, stage: str) -> None:
        _check_data(self, self.hparams.image_size, self.hparams.in_channels)

    def degrade(self, x: Tensor) -> Tensor:
        """The low-resolution input of a training pair."""
        low = F.avg_pool2d(x, self.hparams.scale)
        if self.hparams.noise_std > 0:
            low = (low + self.hparams.noise_std * torch.randn_like(low)).clamp(0.0, 1.0)
        return low

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x = batch[0]
        loss = F.mse_loss(self.net(self.degrade(x)), x)
        self.log("train/loss", loss.detach(), on_step=True, on_epoch=True, prog_bar=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x = batch[0]
        low = F.avg_pool2d(x, self.hparams.scale)
        mse = F.mse_loss(self.net(low).clamp(0, 1), x)
        base = F.interpolate(low, scale_factor=self.hparams.scale, mode="bilinear", align_corners=False)
        self.log("val/mse", mse, prog_bar=True)
        self.log("val/psnr", -10 * torch.log10(mse.clamp_min(1e-12)))
        self.log("val/mse_bilinear", F.mse_loss(base, x))

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.net.parameters(), lr=self.hparams.lr)
