"""DefenseGAN (Samangouei et al. 2018): replace an input by its projection onto a generator's range.

``x -> G(z*)`` with ``z* = argmin_z ||G(z) - x||^2`` found by ``restarts`` (R) random starts
``z_0 ~ N(0, I)`` of ``steps`` (L) gradient steps each; per example the restart with the lowest
reconstruction error wins. Defaults are the authors' (``experiments/cfgs/gans/mnist.yml`` and their
reconstruction code): R = 10, L = 200, the loss the per-example mean squared error summed over the
batch, gradient descent with momentum 0.7 and learning rate 10, divided by 10 after 80% of the steps.

The projection is an inner optimisation, not a differentiable layer: the output is computed under
``no_grad`` (``z`` alone is differentiated), so autograd sees a zero input gradient and a naive
attack is stopped by gradient masking, not by robustness. The adaptive attack (Athalye et al. 2018)
wraps it in :class:`lightning_adv.attacks.BPDA` (identity backward) and averages over its random
restarts with EOT (``eot_samples``): each forward draws new starting points.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

from ..attacks import attack_grad_context, module_mode
from ..models import load_model_weights
from ..validation import check_int, check_real, load_weights_file
from .gan import Generator

__all__ = ["DefenseGAN", "load_generator"]


def load_generator(path: str) -> Generator:
    """The generator of a :class:`~lightning_adv.modules.GANTraining` checkpoint (``weights_only=True``)."""
    ckpt = load_weights_file(path, "purifier_checkpoint")
    hp = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    if not hp or "latent_dim" not in hp:
        raise ValueError(f"purifier_checkpoint={path!r} is not a GANTraining checkpoint (no latent_dim in its "
                         f"hyper_parameters); train one with python train.py fit --config "
                         f"configs/purifier_defensegan_omniglot.yaml")
    gen = Generator(latent_dim=hp["latent_dim"], image_size=hp["image_size"], in_channels=hp["in_channels"],
                    width=hp["gen_width"])
    return load_model_weights(gen, ckpt, key_prefix="generator.")


class DefenseGAN(nn.Module):
    """Projection onto the range of ``generator`` (in front of any classifier or adapted learner).

    Args:
        generator: maps ``(N, latent_dim)`` to images in [0, 1]; kept in eval mode while projecting.
        latent_dim: size of ``z`` (default: ``generator.latent_dim``).
        restarts: R random starting points per image.
        steps: L gradient steps per start.
        lr: step size on the per-example mean squared error (authors: 10 for [0, 1] images).
        momentum: heavy-ball momentum (authors: 0.7).
        lr_decay: multiplier of ``lr`` from ``decay_at * steps`` on (authors: 0.1 at 80%).
    """

    def __init__(self, generator: nn.Module, latent_dim: Optional[int] = None, restarts: int = 10, steps: int = 200,
                 lr: float = 10.0, momentum: float = 0.7, lr_decay: float = 0.1, decay_at: float = 0.8) -> None:
        super().__init__()
        self.restarts = check_int("restarts", restarts, 1, "Samangouei et al.: restarts 10")
        self.steps = check_int("steps", steps, 1, "Samangouei et al.: steps 200")
        check_real("lr", lr, positive=True, hint="the projection's step; Samangouei et al.: 10")
        check_real("momentum", momentum, minimum=0.0, maximum=1.0, below_max=True, hint="the projection's; authors: 0.7")
        if not (0 < lr_decay <= 1 and 0 < decay_at <= 1):
            raise ValueError(f"lr_decay={lr_decay} and decay_at={decay_at} must be in (0, 1]")
        latent_dim = latent_dim if latent_dim is not None else getattr(generator, "latent_dim", None)
        if latent_dim is None:
            raise ValueError("DefenseGAN.latent_dim is needed for a generator without a latent_dim attribute")
        self.generator = generator
        self.latent_dim = check_int("latent_dim", latent_dim, 1)
        # only z is differentiated (torch.autograd.grad w.r.t. z): the generator's .grad is never touched
        self.lr, self.momentum, self.lr_decay, self.decay_at = float(lr), float(momentum), float(lr_decay), decay_at

    def output_shape(self) -> tuple[int, ...]:
        """The shape of one generated image (one forward of the generator)."""
        with torch.no_grad(), module_mode(self.generator, "eval"):
            p = next(self.generator.parameters(), None)
            z = torch.zeros(2, self.latent_dim, device=None if p is None else p.device)
            return tuple(self.generator(z).shape[1:])

    def check_input_shape(self, shape: tuple[int, ...]) -> None:
        """``ValueError`` when the generator's images do not have the data's shape ``(C, H, W)``."""
        out = self.output_shape()
        if tuple(out) != tuple(shape):
            raise ValueError(f"the DefenseGAN generator makes images of shape {out} but the data has shape "
                             f"{tuple(shape)}; train the generator on this data (image_size, in_channels) or resize "
                             f"the data (--data.image_size)")

    def project(self, x: Tensor, history: bool = False) -> tuple[Tensor, Tensor, Optional[Tensor]]:
        """``(G(z*), per-example squared error of G(z*), history)`` for images ``x`` ``(B, C, H, W)``.

        ``history`` (if asked): ``(steps + 1, B)``, the best-over-restarts mean squared error before
        each step and after the last.
        """
        self.check_input_shape(tuple(x.shape[1:]))
        b, r = x.shape[0], self.restarts
        target = x.detach().repeat_interleave(r, dim=0)
        decay_step = math.ceil(self.decay_at * self.steps)
        trace = []
        with attack_grad_context(), module_mode(self.generator, "eval"):
            z = torch.randn(b * r, self.latent_dim, device=x.device, dtype=x.dtype)
            velocity = torch.zeros_like(z)
            for t in range(self.steps + 1):
                z = z.detach().requires_grad_(t < self.steps)
                err = (self.generator(z) - target).pow(2).flatten(1).mean(1)
                if history:
                    trace.append(err.detach().view(b, r).min(1).values)
                if t == self.steps:
                    break
                (grad,) = torch.autograd.grad(err.sum(), z)
                velocity = self.momentum * velocity + grad
                lr = self.lr * (self.lr_decay if t >= decay_step else 1.0)
                z = z - lr * velocity
            with torch.no_grad():
                best = err.detach().view(b, r).argmin(1)
                idx = torch.arange(b, device=x.device) * r + best
                out = self.generator(z.detach()[idx])
        return out.detach(), err.detach()[idx], torch.stack(trace) if history else None

    def forward(self, x: Tensor) -> Tensor:
        out = self.project(x)[0].to(x.dtype)
        # an optimisation is not a layer: autograd sees a zero (but connected) input gradient
        return out + 0.0 * x if x.requires_grad else out

    def extra_repr(self) -> str:
        return f"restarts={self.restarts}, steps={self.steps}, lr={self.lr}, momentum={self.momentum}"
