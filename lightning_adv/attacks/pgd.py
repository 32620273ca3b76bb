"""One projected-gradient loop for every attack in the project.

:func:`pgd` takes any callable model, a per-example loss and a threat model. Adversarial
training (cross-entropy), TRADES (KL to the clean prediction), ARD (the student's
cross-entropy) and adversarial querying (the adapted learner's query loss) differ only in
the loss they pass. :class:`~lightning_adv.attacks.PGD` (an :class:`~lightning_adv.attacks.Attack`,
the same object in training and evaluation) is its configurable, typed front end;
:class:`~lightning_adv.attacks.FGSM` is its one-step case. :func:`input_gradient` is the one
place an attack takes an input gradient, with Expectation over Transformation (EOT) built in.

Design points, each tested in ``tests/test_attacks.py``:

* gradients are taken with ``torch.autograd.grad`` with respect to the perturbation only:
  parameter ``.grad`` is never touched and DDP never synchronises during an attack;
* the train/eval mode of the model during the attack is a parameter (``bn_mode``) and
  every submodule's own mode is restored afterwards (torchattacks resets the whole model
  to ``train()``, which is wrong for a frozen teacher or an eval-mode BN);
* it works under ``torch.no_grad`` (Lightning validation) and ``torch.inference_mode``
  (Lightning test) by re-enabling autograd locally and cloning inference tensors;
* restarts keep, per example, a restart that fools the model if any does (the loss only
  breaks ties among restarts that all fool or all fail), and restart 0 draws its random
  start first, so with the same seed ``restarts=r`` never breaks fewer examples than
  ``restarts=1``;
* under autocast (``bf16-mixed``, ``16-mixed``) the forwards run in half precision, but the loss
  is summed in fp32, the input gradient, step and projection are fp32 and ``x_adv`` stays fp32 in
  [0, 1] (fp16: a scaled backward, an fp32 retry on overflow; ``docs/precision.md``).

Differences from the thesis authors' code (see shared notes): the random start is clamped
to [0, 1] before the first forward (theirs clamps only after the first step); the loss
is a per-example mean-free sum, irrelevant under sign steps.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Optional, Union

import torch
from torch import Tensor, nn

from .losses import LossFn
from .threat import ThreatModel, clamp_to_image

__all__ = ["pgd", "input_gradient", "fp16_autocast", "FP16_GRAD_SCALE", "success", "module_mode", "attack_grad_context",
           "BN_MODES"]

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
               targeted: bool, per_example: bool) -> tuple[Tensor, Tensor]:
    logits = model(x)
    loss = loss_fn(logits, target)
    if per_example and loss.dim() != 1:
        raise ValueError(
            f"the attack loss must return one value per example (shape (B,)), got shape {tuple(loss.shape)}; "
            "per-example losses are needed to keep the worst restart per example"
        )
    return (-loss if targeted else loss), logits


def success(logits: Tensor, target: Any, targeted: bool) -> Tensor:
    """Per example: does the attack point succeed? Untargeted: the prediction is not the label (for a
    probability target, e.g. TRADES' clean softmax, not its argmax); targeted: it is the target."""
    pred = logits.argmax(-1)
    if isinstance(target, Tensor) and target.is_floating_point():
        target = target.argmax(-1)
    if not isinstance(target, Tensor) or target.shape != pred.shape:
        return torch.zeros_like(pred, dtype=torch.bool)  # a loss target without labels: rank by loss only
    return pred == target if targeted else pred != target


def input_gradient(model: Callable[[Tensor], Tensor], x_adv: Tensor, target: Any, loss_fn: LossFn,
                   targeted: bool = False, eot_samples: int = 1) -> Tensor:
    """Gradient of the (summed) attack objective w.r.t. the input ``x_adv`` only.

    ``eot_samples > 1`` is Expectation over Transformation (Athalye et al. 2018): the gradient is
    averaged over that many forwards of a randomised model or input transform.

    Under mixed precision (autocast) the forward runs in half precision, the loss is summed in
    fp32 and the gradient arrives in ``x_adv``'s dtype (fp32). Under fp16 autocast the loss is
    scaled by ``FP16_GRAD_SCALE`` (the gradient of a confidently classified example underflows
    fp16 otherwise, which would stall the attack exactly where it has work to do) and, should a
    gradient come out non-finite, it is recomputed with autocast off.
    """
    x_adv = x_adv.detach().requires_grad_(True)
    grad: Optional[Tensor] = None
    for _ in range(eot_samples):
        g = _gradient_once(model, x_adv, target, loss_fn, targeted)
        grad = g if grad is None else grad + g
    assert grad is not None
    return grad / eot_samples if eot_samples > 1 else grad


#: loss scale of an attack's backward under fp16 autocast (bf16 has fp32's range and needs none)
FP16_GRAD_SCALE = 1024.0


def fp16_autocast(device_type: str) -> bool:
    """Whether fp16 autocast is on for ``device_type`` (``16-mixed``)."""
    return torch.is_autocast_enabled(device_type) and torch.get_autocast_dtype(device_type) == torch.float16


def _gradient_once(model: Callable[[Tensor], Tensor], x_adv: Tensor, target: Any, loss_fn: LossFn,
                   targeted: bool) -> Tensor:
    device_type = x_adv.device.type
    fp16 = fp16_autocast(device_type)
    scale = FP16_GRAD_SCALE if fp16 else 1.0
    obj, _ = _objective(model, x_adv, target, loss_fn, targeted, per_example=False)
    (g,) = torch.autograd.grad(obj.float().sum() * scale, x_adv)
    if fp16:
        g = g / scale
        if not bool(torch.isfinite(g).all()):  # an overflow in fp16: this gradient in fp32 instead
            with torch.autocast(device_type, enabled=False):
                obj, _ = _objective(model, x_adv, target, loss_fn, targeted, per_example=False)
                (g,) = torch.autograd.grad(obj.float().sum(), x_adv)
    return g.to(x_adv.dtype)


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
    eot_samples: int = 1,
    start_sigma: float = 0.0,
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
        restarts: independent runs. Per example a restart that succeeds (misclassified; targeted:
            classified as the target) wins over one that does not; among restarts that all
            succeed or all fail the highest final loss wins (the standard protocol: an example is
            broken if any restart breaks it).
        targeted: descend the loss (``target`` holds the target labels) instead of ascend.
        bn_mode: 'train', 'eval' or 'keep': mode of ``mode_module`` during the attack,
            restored afterwards.
        mode_module: the module whose mode ``bn_mode`` sets; defaults to ``model`` when it
            is an ``nn.Module``.
        return_loss: also return the per-example loss at the returned point (one extra
            forward when ``restarts == 1``).
        eot_samples: gradients averaged over this many forwards (EOT, for randomised models).
        start_sigma: with ``random_start=False``, start at ``x + start_sigma * N(0, 1)`` (projected):
            the official TRADES attack starts at ``x + 0.001 N(0, 1)``, where the KL is ~0.

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
        best_ok: Optional[Tensor] = None
        shape = (-1, *([1] * (x.dim() - 1)))
        for _ in range(restarts):
            if random_start and threat.eps > 0:
                delta = clamp_to_image(x, threat.project(threat.random_init(x)))
            elif start_sigma > 0 and threat.eps > 0:
                delta = clamp_to_image(x, threat.project(start_sigma * torch.randn_like(x)))
            else:
                delta = torch.zeros_like(x)
            for _ in range(steps if threat.eps > 0 else 0):
                grad = input_gradient(model, x + delta, target, loss_fn, targeted, eot_samples)
                with torch.autocast(x.device.type, enabled=False):  # step and projection in x's dtype (fp32)
                    delta = clamp_to_image(x, threat.project(threat.step(delta, grad, step_size)))
            x_adv = (x + delta).detach()
            if not need_final:
                return x_adv
            with torch.no_grad():
                obj, logits = _objective(model, x_adv, target, loss_fn, targeted, per_example=True)
                ok = success(logits, target, targeted)
            if best_x is None or best_obj is None or best_ok is None:
                best_x, best_obj, best_ok = x_adv, obj, ok
            else:
                better = (ok & ~best_ok) | ((ok == best_ok) & (obj > best_obj))
                best_obj = torch.where(better, obj, best_obj)
                best_ok = best_ok | ok
                best_x = torch.where(better.view(shape), x_adv, best_x)
        assert best_x is not None and best_obj is not None
        if return_loss:
            return best_x, (-best_obj if targeted else best_obj)
        return best_x
