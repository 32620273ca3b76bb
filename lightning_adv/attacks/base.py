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
import importlib
import inspect
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional, TypeVar

import torch
from torch import Tensor, nn

from ..validation import check_labels, check_radius_for_input
from .losses import LossFn
from .context import BN_MODES, as_normal, attack_grad_context, module_mode
from .threat import make_threat

_A = TypeVar("_A", bound="Attack")

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
    #: whether :meth:`run` accepts a ``loss_fn`` (the attack maximises a per-example loss)
    supports_loss_fn: bool = False
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
        """The attack itself; autograd is on, the mode set, parameters frozen, the generator
        forked. Attacks with ``supports_loss_fn`` also take ``loss_fn=`` (``None``: their own)."""

    def check_inputs(self, x: Tensor) -> None:
        """Image attacks: the clean inputs must be in [0, 1] (a [0, 255] batch would be silently clamped)."""
        if self.domain != "image" or x.numel() == 0:
            return
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(
                f"{self.label}: inputs must be images in [0, 1] (pixel space), got values in [{lo:.4g}, {hi:.4g}]; "
                "divide by 255 or move mean/std normalisation into the model (model.mean / model.std)")

    def check_batch(self, model: Any, x: Tensor, y: Any) -> None:
        """Once the input size is known (the first batch): an L2/L1 radius within the image box's diameter for
        that size, and integer labels within the model's ``num_classes`` (when it has one)."""
        if getattr(self, "_batch_checked", False):
            return
        if self.domain == "image" and x.dim() > 1:
            check_radius_for_input(self.norm, self.eps, x[0].numel())
        check_labels(y, getattr(model, "num_classes", None), f"{self.label} (y)")
        self._batch_checked = True

    def finalize(self, x: Tensor, x_adv: Tensor) -> Tensor:
        """The returned adversarial input: images are clamped to [0, 1]; other domains override this to
        enforce (or check) their own constraints."""
        return x_adv.clamp(0.0, 1.0) if self.domain == "image" else x_adv

    def perturbation_size(self, x: Tensor, x_adv: Tensor) -> Tensor:
        """Per-example size of the perturbation the suite reports (the ``norm`` of ``x_adv - x``)."""
        return perturbation_norm(x_adv - x, self.norm)

    def run(self, model: Model, x: Tensor, y: Any, mode_module: Optional[nn.Module] = None,
            targets: Optional[Tensor] = None, loss_fn: Optional[LossFn] = None, check: bool = True) -> AttackOutput:
        """Attack ``model`` at ``(x, y)``; returns detached adversarial inputs (images in [0, 1]).

        Args:
            model: any callable from inputs to logits (a module, an adapted few-shot learner).
            y: labels, or whatever ``loss_fn`` takes as its target (TRADES: clean probabilities).
            mode_module: the module whose train/eval mode ``bn_mode`` sets and whose parameters
                are frozen (default: ``model`` when it is a module).
            targets: target labels of a targeted attack (others ignore it).
            loss_fn: a per-example loss ``(logits, y) -> (B,)`` replacing the attack's own, for
                the attacks that maximise a loss (``supports_loss_fn``): how a training
                objective (TRADES, ARD, adversarial querying) says what its attack maximises.
            check: check the inputs' range (:meth:`check_inputs`, a host-device sync); a training
                step skips it after the epoch's first batch (``objectives.base.check_batch``).

        The random stream: one seed is drawn from the global generator (so consecutive calls
        differ and a seeded run is reproducible) and the attack runs in a fork of the generator
        seeded with it, so library code that reseeds the global generator (AutoAttack) cannot
        disturb training, and an attack's own randomness never depends on what ran before it
        in the same call.
        """
        if loss_fn is not None and not self.supports_loss_fn:
            raise ValueError(f"{type(self).__name__} maximises its own objective and takes no loss_fn; use PGD, FGSM "
                             f"or MIFGSM for a custom attack loss")
        if mode_module is None and isinstance(model, nn.Module):
            mode_module = model
        on_cuda = x.device.type == "cuda"
        seed = int(torch.randint(0, 2**62, (1,)))
        with attack_grad_context(), module_mode(mode_module, self.bn_mode), frozen_parameters(mode_module), \
                torch.random.fork_rng(devices=[x.device] if on_cuda else []):
            # the generators of the devices in use only: torch.manual_seed also queues a lazy seed of every
            # uninitialised device type, with a captured stack trace (milliseconds of host time per call)
            torch.default_generator.manual_seed(seed)
            if on_cuda:
                torch.cuda.default_generators[x.device.index if x.device.index is not None
                                              else torch.cuda.current_device()].manual_seed(seed)
            x = as_normal(x)
            y = as_normal(y)
            if check:
                self.check_inputs(x)
            self.check_batch(model if mode_module is None else mode_module, x, y)  # first batch only
            extra = {"loss_fn": loss_fn} if loss_fn is not None else {}
            try:
                out = self._perturb(model, x, y, as_normal(targets), **extra)
            except IndexError as err:  # a label outside the logits (cross-entropy's "Target 15 is out of bounds")
                if isinstance(y, Tensor) and not y.is_floating_point() and "out of bounds" in str(err):
                    raise ValueError(f"{self.label}: labels must be class indices of the model's outputs; got labels "
                                     f"in [{int(y.min())}, {int(y.max())}] ({err}); fix the data's labels or the "
                                     f"model's num_classes") from None
                raise
        x_adv = out.x_adv.detach().to(x.dtype)
        if x_adv.shape != x.shape:
            raise RuntimeError(f"{self.label} returned shape {tuple(x_adv.shape)} for inputs {tuple(x.shape)}")
        out.x_adv = self.finalize(x, x_adv)
        return out

    def __call__(self, model: Model, x: Tensor, y: Any, loss_fn: Optional[LossFn] = None,
                 mode_module: Optional[nn.Module] = None, targets: Optional[Tensor] = None,
                 check: bool = True) -> Tensor:
        """``x_adv = attack(model, x, y)``: :meth:`run` returning only the adversarial inputs."""
        return self.run(model, x, y, mode_module=mode_module, targets=targets, loss_fn=loss_fn, check=check).x_adv

    # --------------------------------------------------------------- configs
    def config(self) -> dict[str, Any]:
        """The constructor arguments (``class_path`` + ``init_args``): what a checkpoint's
        hyperparameters store and :meth:`coerce` rebuilds."""
        params = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        cls = type(self)
        return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": {p: getattr(self, p) for p in params}}

    @classmethod
    def coerce(cls: type[_A], value: Any, param: str = "attack") -> _A:
        """An attack of class ``cls`` from an instance, its :meth:`config`, or a plain mapping of
        ``cls``'s constructor arguments (as checkpoints of the first version stored them)."""
        if isinstance(value, dict):
            if "class_path" in value:
                module_name, _, cls_name = str(value["class_path"]).rpartition(".")
                klass = getattr(importlib.import_module(module_name), cls_name, None)
                if not (isinstance(klass, type) and issubclass(klass, Attack)):
                    raise ValueError(f"{param}.class_path={value['class_path']!r} is not an attack class of "
                                     f"lightning_adv.attacks")
                value = klass(**dict(value.get("init_args") or {}))
            else:
                value = cls(**value)
        if not isinstance(value, cls):
            raise ValueError(f"{param} must be a {cls.__name__} attack (lightning_adv.attacks.{cls.__name__}), got "
                             f"{type(value).__name__}")
        return value
