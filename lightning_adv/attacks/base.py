"""The interface every attack of the evaluation suite implements.

An :class:`Attack` maps a model, clean images in [0, 1] and labels to adversarial images
(plus, for black-box attacks, the number of model queries spent per example). It is a
plain class with a typed constructor, so a YAML config names it by ``class_path``.

:meth:`Attack.run` is the one entry point: it re-enables autograd (Lightning validates
under ``no_grad`` and may test under ``inference_mode``), puts the model in the mode
``bn_mode`` asks for (eval by default: BatchNorm uses its running statistics), freezes
the parameters for the duration (library code that calls ``backward`` cannot fill
parameter ``.grad``), forks the random number generator (library attacks reseed the
global one) and checks the result stays in [0, 1].
"""
from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

import torch
from torch import Tensor, nn

from .pgd import BN_MODES, _as_normal, attack_grad_context, module_mode
from .threat import make_threat

__all__ = ["Attack", "AttackOutput", "frozen_parameters", "perturbation_norm", "Model"]

Model = Callable[[Tensor], Tensor]


@dataclass
class AttackOutput:
    """Adversarial inputs, for black-box attacks the model queries per example, and any
    other per-example measures of the attack (``extras``: name -> (B,) tensor, e.g. the
    capital an order-book attack commits), which the suite records and reports."""

    x_adv: Tensor
    queries: Optional[Tensor] = None
    extras: dict[str, Tensor] = field(default_factory=dict)


@contextlib.contextmanager
def frozen_parameters(module: Optional[nn.Module]) -> Iterator[None]:
    """``requires_grad=False`` on every parameter of ``module`` for the block, then restored."""
    if module is None:
        yield
        return
    # only leaves: an adapted learner's (learn2learn clone's) weights are computed tensors without .grad
    saved = [(p, p.requires_grad) for p in module.parameters() if p.is_leaf]
    for p, _ in saved:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, req in saved:
            p.requires_grad_(req)


def perturbation_norm(delta: Tensor, norm: str) -> Tensor:
    """Per-example ``||delta||_p`` for 'linf' or 'l2', shape (B,)."""
    return make_threat(norm, 0.0).norm(delta.float())


class Attack(ABC):
    """An attack of the suite.

    Args:
        norm: the norm its perturbation is measured (and, if ``eps`` is set, bounded) in.
        eps: radius of the threat model in [0, 1] pixel units; ``None`` for an unbounded
            minimum-norm attack (DeepFool, Carlini-Wagner without a bound).
        name: the label in reports and metric keys (default: derived from the settings).
        bn_mode: mode of the model during the attack ('eval', 'train' or 'keep').
    """

    #: black-box attacks only query outputs; the suite counts their queries
    black_box: bool = False
    #: 'white-box', 'black-box' or 'ensemble' (AutoAttack: gradient-based attacks plus Square)
    kind: str = "white-box"
    #: targeted attacks aim at a target class (the suite still counts any misclassification)
    targeted: bool = False
    #: what the inputs are. 'image': pixels in [0, 1] (checked before the attack, the result is clamped
    #: to [0, 1]); any other domain (e.g. 'orderbook') checks its own constraints in :meth:`finalize` and
    #: measures its perturbations in :meth:`perturbation_size`
    domain: str = "image"

    def __init__(self, norm: str = "linf", eps: Optional[float] = None, name: Optional[str] = None,
                 bn_mode: str = "eval") -> None:
        if eps is not None:
            make_threat(norm, eps)  # validates norm and eps, names the parameter
        else:
            make_threat(norm, 0.0)
        self.norm = make_threat(norm, 0.0).name
        self.eps = None if eps is None else float(eps)
        if bn_mode not in BN_MODES:
            raise ValueError(f"bn_mode must be one of {BN_MODES}, got bn_mode={bn_mode!r}")
        self.bn_mode = bn_mode
        if name is not None and ("/" in name or not name):
            raise ValueError(f"name={name!r} must be non-empty and contain no '/' (it becomes a metric key)")
        self.name = name

    # --------------------------------------------------------------- naming
    def _eps_tag(self) -> str:
        if self.eps is None:
            return ""
        return f"_eps{self.eps * 255:g}" if self.norm == "linf" else f"_eps{self.eps:g}"

    @abstractmethod
    def default_label(self) -> str:
        """A label derived from the settings, e.g. ``mifgsm20_linf_eps8``."""

    @property
    def label(self) -> str:
        return self.name or self.default_label()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.label})"

    # --------------------------------------------------------------- running
    @abstractmethod
    def _perturb(self, model: Model, x: Tensor, y: Tensor, targets: Optional[Tensor]) -> AttackOutput:
        """The attack itself; autograd is on, the mode set, parameters frozen."""

    def check_inputs(self, x: Tensor) -> None:
        """Image attacks: the clean inputs must be in [0, 1] (a [0, 255] batch would be silently clamped)."""
        if self.domain != "image" or x.numel() == 0:
            return
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(
                f"{self.label}: inputs must be images in [0, 1] (pixel space), got values in [{lo:.4g}, {hi:.4g}]; "
                "divide by 255 or move mean/std normalisation into the model (model.mean / model.std)")

    def finalize(self, x: Tensor, x_adv: Tensor) -> Tensor:
        """The returned adversarial input: images are clamped to [0, 1]; other domains override this to
        enforce (or check) their own constraints."""
        return x_adv.clamp(0.0, 1.0) if self.domain == "image" else x_adv

    def perturbation_size(self, x: Tensor, x_adv: Tensor) -> Tensor:
        """Per-example size of the perturbation the suite reports (the ``norm`` of ``x_adv - x``)."""
        return perturbation_norm(x_adv - x, self.norm)

    def run(self, model: Model, x: Tensor, y: Tensor, mode_module: Optional[nn.Module] = None,
            targets: Optional[Tensor] = None) -> AttackOutput:
        """Attack ``model`` at ``(x, y)``; returns detached adversarial inputs (images in [0, 1]).

        ``targets`` (target labels) is used by targeted attacks; others ignore it.
        """
        if mode_module is None and isinstance(model, nn.Module):
            mode_module = model
        devices = [x.device] if x.device.type == "cuda" else []
        with attack_grad_context(), module_mode(mode_module, self.bn_mode), frozen_parameters(mode_module), \
                torch.random.fork_rng(devices=devices):
            x = _as_normal(x)
            y = _as_normal(y)
            self.check_inputs(x)
            out = self._perturb(model, x, y, _as_normal(targets))
        x_adv = out.x_adv.detach().to(x.dtype)
        if x_adv.shape != x.shape:
            raise RuntimeError(f"{self.label} returned shape {tuple(x_adv.shape)} for inputs {tuple(x.shape)}")
        out.x_adv = self.finalize(x, x_adv)
        return out

    def __call__(self, model: Model, x: Tensor, y: Tensor) -> Tensor:
        return self.run(model, x, y).x_adv
