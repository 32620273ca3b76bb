"""One projected-gradient loop for every attack in the project.

:func:`pgd` takes any callable model, a per-example loss and a threat model. Adversarial
training (cross-entropy), TRADES (KL to the clean prediction), ARD (the student's
cross-entropy) and adversarial querying (the adapted learner's query loss) differ only in
the loss they pass. :class:`PGD` is the configurable, typed front end (a dataclass, so
LightningCLI reads it from YAML); :class:`FGSM` is its one-step case.

Design points, each tested in ``tests/test_attacks.py``:

* gradients are taken with ``torch.autograd.grad`` with respect to the perturbation only:
  parameter ``.grad`` is never touched and DDP never synchronises during an attack;
* the train/eval mode of the model during the attack is a parameter (``bn_mode``) and
  every submodule's own mode is restored afterwards (torchattacks resets the whole model
  to ``train()``, which is wrong for a frozen teacher or an eval-mode BN);
* it works under ``torch.no_grad`` (Lightning validation) and ``torch.inference_mode``
  (Lightning test) by re-enabling autograd locally and cloning inference tensors;
* restarts keep, per example, the restart with the highest final loss, and restart 0
  draws its random start first, so with the same seed ``restarts=r`` is never weaker than
  ``restarts=1``.

Differences from the thesis authors' code (see shared notes): the random start is clamped
to [0, 1] before the first forward (theirs clamps only after the first step); the loss
is a per-example mean-free sum, irrelevant under sign steps.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Union

import torch
from torch import Tensor, nn

from .losses import LossFn, get_attack_loss
from .threat import ThreatModel, clamp_to_image, make_threat

__all__ = ["pgd", "PGD", "FGSM", "module_mode", "attack_grad_context", "BN_MODES"]

BN_MODES = ("train", "eval", "keep")


@contextlib.contextmanager
def module_mode(module: Optional[nn.Module], mode: str) -> Iterator[None]:
    """Put ``module`` in train or eval mode for the block; restore every submodule's mode.

    ``mode='keep'`` (or ``module=None``) leaves modes untouched.
    """
    if mode not in BN_MODES:
        raise ValueError(f"bn_mode must be one of {BN_MODES}, got bn_mode={mode!r}")
    if module is None or mode == "keep":
        yield
        return
    saved = [(m, m.training) for m in module.modules()]
    module.train(mode == "train")
    try:
        yield
    finally:
        for m, was_training in saved:
            m.training = was_training


@contextlib.contextmanager
def attack_grad_context() -> Iterator[None]:
    """Autograd on, inside Lightning's ``no_grad`` validation or ``inference_mode`` test."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


def _as_normal(t: Any) -> Any:
    """A detached tensor usable by autograd (inference tensors are cloned)."""
    if isinstance(t, Tensor):
        if t.is_inference():
            t = t.clone()
        return t.detach()
    return t


def _objective(model: Callable[[Tensor], Tensor], x: Tensor, target: Any, loss_fn: LossFn,
               targeted: bool, per_example: bool) -> Tensor:
    loss = loss_fn(model(x), target)
    if per_example and loss.dim() != 1:
        raise ValueError(
            f"the attack loss must return one value per example (shape (B,)), got shape {tuple(loss.shape)}; "
            "per-example losses are needed to keep the worst restart per example"
        )
    return -loss if targeted else loss


def pgd(
    model: Callable[[Tensor], Tensor],
    x: Tensor,
    target: Any,
    threat: ThreatModel,
    *,
    steps: int,
    step_size: float,
    loss_fn: LossFn,
    random_start: bool = True,
    restarts: int = 1,
    targeted: bool = False,
    bn_mode: str = "eval",
    mode_module: Optional[nn.Module] = None,
    return_loss: bool = False,
) -> Union[Tensor, tuple[Tensor, Tensor]]:
    """Projected gradient ascent on ``loss_fn(model(x + delta), target)`` inside ``threat``.

    Args:
        model: any callable from a batch of images in [0, 1] to outputs (logits, or the
            query logits of an adapted few-shot learner).
        x: clean inputs in [0, 1], shape (B, ...).
        target: whatever ``loss_fn`` takes second (labels, target labels, clean probs).
        threat: the threat model (ball, step rule, projection).
        steps: number of ascent steps (0 returns the random start, or ``x``).
        step_size: size of each step in the threat model's norm.
        loss_fn: per-example loss ``(outputs, target) -> (B,)``.
        random_start: start uniformly inside the ball instead of at ``x``.
        restarts: independent runs; per example the one with the highest final loss wins.
        targeted: descend the loss (``target`` holds the target labels) instead of ascend.
        bn_mode: 'train', 'eval' or 'keep': mode of ``mode_module`` during the attack,
            restored afterwards.
        mode_module: the module whose mode ``bn_mode`` sets; defaults to ``model`` when it
            is an ``nn.Module``.
        return_loss: also return the per-example loss at the returned point (one extra
            forward when ``restarts == 1``).

    Returns:
        ``x_adv`` (detached), or ``(x_adv, loss)`` with ``return_loss``.
    """
    if mode_module is None and isinstance(model, nn.Module):
        mode_module = model
    with attack_grad_context(), module_mode(mode_module, bn_mode):
        x = _as_normal(x)
        target = _as_normal(target)
        need_final = restarts > 1 or return_loss
        best_x: Optional[Tensor] = None
        best_obj: Optional[Tensor] = None
        for _ in range(restarts):
            if random_start and threat.eps > 0:
                delta = clamp_to_image(x, threat.project(threat.random_init(x)))
            else:
                delta = torch.zeros_like(x)
            for _ in range(steps if threat.eps > 0 else 0):
                delta.requires_grad_(True)
                obj = _objective(model, x + delta, target, loss_fn, targeted, per_example=False)
                (grad,) = torch.autograd.grad(obj.sum(), delta)
                delta = threat.step(delta.detach(), grad, step_size)
                delta = clamp_to_image(x, threat.project(delta))
            x_adv = (x + delta).detach()
            if not need_final:
                return x_adv
            with torch.no_grad():
                obj = _objective(model, x_adv, target, loss_fn, targeted, per_example=True)
            if best_x is None or best_obj is None:
                best_x, best_obj = x_adv, obj
            else:
                better = obj > best_obj
                best_obj = torch.where(better, obj, best_obj)
                best_x = torch.where(better.view(-1, *([1] * (x.dim() - 1))), x_adv, best_x)
        assert best_x is not None and best_obj is not None
        if return_loss:
            return best_x, (-best_obj if targeted else best_obj)
        return best_x


@dataclass
class PGD:
    """Projected gradient descent attack (Madry et al.), configurable from YAML.

    Defaults are the thesis' training attack: Linf, eps 8/255, 10 steps of 2/255, random
    start. ``step_size=None`` means ``2.5 * eps / steps`` (Madry et al.'s rule; 2/255 for
    eps 8/255 and 10 steps). ``loss`` names a per-example loss: 'ce' (labels), 'kl'
    (target is a probability vector, TRADES) or 'margin' (Carlini-Wagner).

    Call it as ``x_adv = attack(model, x, y)``.
    """

    eps: float = 8 / 255
    steps: int = 10
    step_size: Optional[float] = None
    norm: str = "linf"
    random_start: bool = True
    restarts: int = 1
    targeted: bool = False
    bn_mode: str = "eval"
    loss: str = "ce"
    name: Optional[str] = None

    def __post_init__(self) -> None:
        self.threat  # validates eps and norm
        if int(self.steps) != self.steps or self.steps < 0:
            raise ValueError(f"steps must be an integer >= 0, got steps={self.steps}")
        self.steps = int(self.steps)
        if self.step_size is not None and (not math.isfinite(self.step_size) or self.step_size <= 0):
            raise ValueError(f"step_size must be > 0 (or null for 2.5*eps/steps), got step_size={self.step_size}")
        if int(self.restarts) != self.restarts or self.restarts < 1:
            raise ValueError(f"restarts must be an integer >= 1, got restarts={self.restarts}")
        self.restarts = int(self.restarts)
        if self.bn_mode not in BN_MODES:
            raise ValueError(f"bn_mode must be one of {BN_MODES}, got bn_mode={self.bn_mode!r}")
        get_attack_loss(self.loss)
        if self.name is not None and ("/" in self.name or not self.name):
            raise ValueError(f"name={self.name!r} must be non-empty and contain no '/' (it becomes a metric key)")

    @classmethod
    def coerce(cls, value: Any, param: str = "attack") -> "PGD":
        """Accept a PGD config or a mapping of its fields (as stored in checkpoint hparams)."""
        if isinstance(value, dict):
            value = cls(**value)
        if not isinstance(value, PGD):
            raise ValueError(f"{param} must be a PGD config, got {type(value).__name__}")
        return value

    @property
    def threat(self) -> ThreatModel:
        return make_threat(self.norm, self.eps)

    @property
    def effective_step_size(self) -> float:
        if self.step_size is not None:
            return float(self.step_size)
        return 2.5 * self.eps / max(self.steps, 1)

    @property
    def label(self) -> str:
        """The name used in metric keys, e.g. ``pgd20_linf_eps8`` (Linf eps in 1/255)."""
        if self.name:
            return self.name
        kind = f"pgd{self.steps}" if (self.random_start or self.steps != 1) else "fgsm"
        threat = self.threat
        eps = f"{self.eps * 255:g}" if threat.name == "linf" else f"{self.eps:g}"
        suffix = f"_r{self.restarts}" if self.restarts > 1 else ""
        tgt = "_targeted" if self.targeted else ""
        return f"{kind}_{threat.name}_eps{eps}{suffix}{tgt}"

    def __call__(
        self,
        model: Callable[[Tensor], Tensor],
        x: Tensor,
        target: Any,
        loss_fn: Optional[LossFn] = None,
        mode_module: Optional[nn.Module] = None,
        return_loss: bool = False,
    ) -> Union[Tensor, tuple[Tensor, Tensor]]:
        return pgd(
            model, x, target, self.threat,
            steps=self.steps,
            step_size=self.effective_step_size,
            loss_fn=loss_fn if loss_fn is not None else get_attack_loss(self.loss),
            random_start=self.random_start,
            restarts=self.restarts,
            targeted=self.targeted,
            bn_mode=self.bn_mode,
            mode_module=mode_module,
            return_loss=return_loss,
        )


@dataclass
class FGSM(PGD):
    """Fast gradient sign method: one step of size eps from the clean point."""

    steps: int = 1
    step_size: Optional[float] = None
    random_start: bool = False

    @property
    def effective_step_size(self) -> float:
        return float(self.step_size) if self.step_size is not None else self.eps
