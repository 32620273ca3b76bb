"""Argument and input checks shared by the model zoo.

Every error is a ``ValueError`` that names the parameter, the value it got and what
would work (design decision 8: errors name the fix).
"""
from __future__ import annotations

import numbers
from typing import Any, Optional, Sequence

from torch import Tensor

__all__ = [
    "check_int",
    "check_num_classes",
    "check_in_channels",
    "check_positive_ints",
    "check_image_batch",
]


def check_int(name: str, value: Any, minimum: int, hint: str = "") -> int:
    """Return ``value`` as an ``int`` if it is an integer ``>= minimum``, else raise."""
    # bool is an int subclass; ``num_classes=True`` is a bug, not 1.
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(
            f"{name} must be an integer >= {minimum}, got {value!r} ({type(value).__name__})"
            + (f"; {hint}" if hint else "")
        )
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}" + (f"; {hint}" if hint else ""))
    return int(value)


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
