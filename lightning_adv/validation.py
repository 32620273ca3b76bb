"""The library's argument checks, in one place: numbers, radii, step sizes, labels, weight files, image
batches. Every constructor of the library (models, attacks, objectives, modules, data modules, callbacks,
defenses, certification, order books) checks its arguments with these functions.

Every error names the parameter, the value it got and what would work, on one line (design decision 8:
errors name the fix). A value of the wrong type raises :class:`ArgumentTypeError`, both a ``TypeError``
and a ``ValueError``, with the value's ``repr`` (``steps='10'`` is a string, not the integer 10).

One rule for booleans: a bool is never a number. ``steps: true`` in a config is a mistake, not 1, and
``eps: false`` is not 0; :func:`check_int` and :func:`check_real` refuse them by name.

Radii (:func:`check_radius`): an Linf radius lies in [0, 1] (the image box is [0, 1]); an L2 or L1
radius at most the box's diameter in that norm for the input's size (``sqrt(d)``, ``d``), checked
against the largest image the project handles at construction and against the input's size when it
is known (:func:`check_radius_for_input`, at an attack's first batch). A step (:func:`check_step_size`)
at most the ball's diameter ``2 * eps``, for every attack and objective.
"""
from __future__ import annotations

import math
import numbers
import os
from pathlib import Path
from typing import Any, Optional, Sequence

from torch import Tensor

__all__ = [
    "ArgumentTypeError",
    "MAX_IMAGE_NUMEL",
    "box_diameter",
    "check_real",
    "check_radius",
    "check_radius_for_input",
    "check_step_size",
    "check_labels",
    "load_weights_file",
    "check_int",
    "check_num_classes",
    "check_in_channels",
    "check_positive_ints",
    "check_image_batch",
]


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type (a string for a number): a ``TypeError`` that ``except ValueError``
    and ``train.py``'s one-line errors also catch."""


def _bool_error(name: str, value: bool, kind: str, example: str, fix: str) -> ArgumentTypeError:
    return ArgumentTypeError(f"{name} must be {kind}, got {name}={value!r} (a bool, not a number); "
                             f"write a number such as {name}={example}{fix}")


def check_int(name: str, value: Any, minimum: int, hint: str = "", whole_floats: bool = False) -> int:
    """Return ``value`` as an ``int`` if it is an integer ``>= minimum``, else raise naming ``name``.
    A bool is refused (``steps=True`` is a bug, not 1). With ``whole_floats`` a float with an integer
    value (attack ``steps=10.0``) is accepted; ``2.5`` never is."""
    fix = f"; {hint}" if hint else ""
    if isinstance(value, bool):
        raise _bool_error(name, value, f"an integer >= {minimum}", str(max(minimum, 1)), fix)
    whole_float = whole_floats and isinstance(value, float) and math.isfinite(value) and value == int(value)
    if not (isinstance(value, numbers.Integral) or whole_float):
        error = ValueError if isinstance(value, numbers.Number) else ArgumentTypeError
        raise error(f"{name} must be an integer >= {minimum}, got {name}={value!r} ({type(value).__name__}){fix}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {name}={value!r}{fix}")
    return int(value)


def check_real(name: str, value: Any, minimum: Optional[float] = None, positive: bool = False,
               hint: str = "", maximum: Optional[float] = None, below_max: bool = False) -> float:
    """A finite real number as a float, else raise naming ``name``: ``>= minimum`` (``> 0`` with
    ``positive``), ``<= maximum`` (``< maximum`` with ``below_max``). A bool is refused (``eps=False`` is
    not 0); a string or another non-number is an :class:`ArgumentTypeError` (``eps='8/255'``: write
    ``8/255`` as ``0.0314`` or compute it in Python); ``nan``/``inf`` are refused by name."""
    fix = f"; {hint}" if hint else ""
    if isinstance(value, bool):
        raise _bool_error(name, value, "a number", "0.1", fix)
    if not isinstance(value, numbers.Real):
        raise ArgumentTypeError(f"{name} must be a number, got {name}={value!r} ({type(value).__name__}); "
                                f"give a float such as 0.1{fix}")
    value = float(value)
    if math.isnan(value):
        raise ValueError(f"{name}=nan is not allowed (nan is not a number); give a finite float{fix}")
    if not math.isfinite(value):
        raise ValueError(f"{name}={value} is not a finite number; give a finite float{fix}")
    low = (positive and value <= 0) or (minimum is not None and value < minimum)
    high = maximum is not None and (value >= maximum if below_max else value > maximum)
    if low or high:
        bounds = [("> 0" if positive else f">= {minimum:g}") if positive or minimum is not None else "",
                  "" if maximum is None else f"{'<' if below_max else '<='} {maximum:g}"]
        raise ValueError(f"{name} must be a finite number {' and '.join(b for b in bounds if b)}, "
                         f"got {name}={value!r}{fix}")
    return value


#: the largest input the project's radii are checked against before the input size is known: a
#: 3 x 1024 x 1024 image (L2 diameter 1774, L1 diameter 3.1e6)
MAX_IMAGE_NUMEL = 3 * 1024 * 1024


def _norm_key(norm: str) -> str:
    key = str(norm).lower().replace("_", "").replace("-", "")
    return {"inf": "linf", "2": "l2", "1": "l1"}.get(key, key)


def box_diameter(norm: str, numel: int) -> float:
    """The diameter of the image box [0, 1]^numel in ``norm`` ('linf', 'l2' or 'l1')."""
    key = _norm_key(norm)
    if key == "linf":
        return 1.0
    if key == "l2":
        return math.sqrt(numel)
    if key == "l1":
        return float(numel)
    raise ValueError(f"unknown norm={norm!r}; use 'linf', 'l2' or 'l1'")


def check_radius(norm: str, eps: Any, numel: Optional[int] = None, name: str = "eps") -> float:
    """A radius of the threat model in [0, 1] pixel space: ``0 <= eps <= `` the image box's diameter in
    ``norm`` for inputs of ``numel`` values (default :data:`MAX_IMAGE_NUMEL`): beyond it every image is
    reachable from every other and the ball is not a threat model."""
    eps = check_real(name, eps, minimum=0.0, hint="pixel units in [0, 1], e.g. 8/255 = 0.0314 for Linf")
    key = _norm_key(norm)
    if key == "linf" and eps > 1:
        raise ValueError(f"{name}={eps:g} exceeds 1 for an Linf threat model in [0, 1] pixel space: every image "
                         f"would be reachable. Give {name} in pixel units, e.g. 8/255 = {8 / 255:.4f}")
    limit = box_diameter(key, MAX_IMAGE_NUMEL if numel is None else numel)
    if eps > limit:
        size = (f"inputs of {numel} values" if numel is not None
                else f"any image up to 3x1024x1024 ({MAX_IMAGE_NUMEL} values)")
        typical = "0.5 on CIFAR-10, 2.0 on MNIST" if key == "l2" else "10 to 12 on CIFAR-10"
        raise ValueError(f"{name}={eps:g} exceeds {limit:.4g}, the {key.upper()} diameter of the image box [0, 1] for "
                         f"{size}: every image would be reachable. Give {name} in pixel units (e.g. {typical})")
    return eps


def check_radius_for_input(norm: str, eps: Optional[float], numel: int, who: str = "eps") -> None:
    """:func:`check_radius` once the input size is known (an attack's first batch)."""
    if eps is not None and _norm_key(norm) != "linf":
        check_radius(norm, eps, numel, name=who)


def check_step_size(step_size: Any, eps: Optional[float], steps: Optional[int] = None,
                    name: str = "step_size") -> float:
    """A step ``> 0`` no longer than the ball's diameter ``2 * eps`` (every step would jump across it). Larger
    than ``eps`` is fine (Madry et al.'s ``2.5 * eps / steps`` is 1.25 eps for 2 steps). ``steps=1``
    (one step from the start, FGSM) is not bounded; ``steps=None`` means an unbounded number of steps
    (free training's persistent perturbation)."""
    step_size = check_real(name, step_size, positive=True)
    if eps and step_size > 2 * eps + 1e-12 and (steps is None or steps > 1):
        rule = (f"Madry et al.: 2.5 * eps / steps = {2.5 * eps / steps:.4g}" if steps
                else f"free training: step_size = eps = {eps:.4g}")
        raise ValueError(f"{name}={step_size:g} exceeds the diameter 2*eps={2 * eps:g} of the ball: every step jumps "
                         f"across it; use {name} <= eps ({rule})")
    return step_size


def check_labels(y: Any, num_classes: Optional[int], who: str) -> None:
    """Integer labels lie in ``[0, num_classes)`` (else a ValueError naming the label and the classes)."""
    import torch

    if num_classes is None or not isinstance(y, torch.Tensor) or y.is_floating_point() or y.numel() == 0:
        return
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= num_classes:
        bad = hi if hi >= num_classes else lo
        raise ValueError(f"{who}: label {bad} is outside the model's classes 0..{num_classes - 1} "
                         f"(num_classes={num_classes}); give labels in [0, {num_classes}) or build the model "
                         f"with num_classes={max(hi + 1, num_classes)}")


def load_weights_file(path: Any, name: str) -> Any:
    """``torch.load(path, weights_only=True)`` of a weights file given as parameter ``name``: a missing file,
    a file that is not a checkpoint (a text file) or one that needs pickled code (refused, never run) is
    a one-line error naming the parameter and the file."""
    import torch

    if not isinstance(path, (str, os.PathLike)):
        raise ArgumentTypeError(f"{name} must be a file path, got {name}={path!r} ({type(path).__name__})")
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{name}={str(path)!r} not found ({'it is a directory' if p.is_dir() else 'check the path'})")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same user error
        first = (str(err).strip().splitlines() or [type(err).__name__])[0].split(". ")[0][:160]
        unsafe = "weights_only" in str(err) or "Unsupported global" in str(err)
        why = ("needs pickled code to load, which is refused (weights_only=True)" if unsafe
               else f"is not a readable PyTorch checkpoint ({type(err).__name__}: {first})")
        raise ValueError(f"{name}={str(path)!r} {why}; give weights saved with torch.save (a .ckpt of train.py "
                         f"or a state dict)") from None


def check_num_classes(num_classes: Any) -> int:
    """``num_classes`` must be an integer >= 2 (a classifier with one class is degenerate)."""
    return check_int("num_classes", num_classes, 2, "e.g. num_classes=10 for CIFAR-10, 100 for CIFAR-100")


def check_in_channels(in_channels: Any) -> int:
    """``in_channels`` must be an integer >= 1."""
    return check_int("in_channels", in_channels, 1, "use 3 for RGB images, 1 for grey images")


def check_positive_ints(name: str, values: Any, length: Optional[int] = None, allow_empty: bool = False) -> tuple[int, ...]:
    """A sequence of integers >= 1 (optionally of a fixed length), returned as a tuple."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ValueError(f"{name} must be a sequence of positive integers, got {values!r}")
    out = tuple(check_int(f"{name}[{i}]", v, 1) for i, v in enumerate(values))
    if length is not None and len(out) != length:
        raise ValueError(f"{name} must have {length} entries, got {len(out)}: {list(out)}")
    if not out and not allow_empty:
        raise ValueError(f"{name} must not be empty, got {list(out)}")
    return out


def check_image_batch(
    x: Tensor,
    in_channels: int,
    model: str,
    min_size: Optional[int] = None,
    exact_size: Optional[int] = None,
) -> None:
    """Raise a clear ``ValueError`` unless ``x`` is an image batch of shape (N, C, H, W).

    Shapes are static, so the check costs nothing at run time and is compatible with
    ``torch.compile`` and ``torch.func`` transforms that keep a batch dimension.
    """
    if x.dim() != 4:
        raise ValueError(
            f"{model} expects a batch of images of shape (N, {in_channels}, H, W) in [0, 1], got a tensor "
            f"of shape {tuple(x.shape)}; add a batch dimension with x.unsqueeze(0) for a single image"
        )
    if x.shape[1] != in_channels:
        raise ValueError(
            f"{model} was built with in_channels={in_channels} but got an input with {x.shape[1]} channels "
            f"(shape {tuple(x.shape)}); build the model with in_channels={x.shape[1]} or fix the data"
        )
    h, w = int(x.shape[2]), int(x.shape[3])
    if exact_size is not None and (h, w) != (exact_size, exact_size):
        raise ValueError(
            f"{model} expects {exact_size}x{exact_size} inputs, got {h}x{w} (shape {tuple(x.shape)}); the "
            f"authors' architecture ends in a fixed-size average pooling, so resize or crop the data to "
            f"{exact_size}x{exact_size}, or use a size-agnostic model such as 'small_cnn'"
        )
    if min_size is not None and min(h, w) < min_size:
        raise ValueError(
            f"{model} needs inputs of at least {min_size}x{min_size} pixels, got {h}x{w} (shape {tuple(x.shape)})"
        )
