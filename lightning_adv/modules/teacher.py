"""The frozen teacher of knowledge distillation, ARD and Fast-ARD.

:func:`load_teacher` builds a registered architecture and loads its weights with
:func:`~lightning_adv.models.load_model_weights` (``torch.load(..., weights_only=True)``):
a checkpoint of this project (its ``model.*`` keys), a raw state dict, an ARD/kuangliu
``{'net': ...}`` file or a released TRADES (``module.``-prefixed) state dict. The result is
in eval mode with ``requires_grad=False`` on every parameter.

Errors name the parameter to fix, before any training step: a missing file
(``FileNotFoundError``), weights of another architecture, a teacher whose number of
classes differs from the student's (``ValueError``).
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional, Union

import torch
from torch import Tensor, nn

from ..models import create_model, load_model_weights, model_class
from ..validation import load_weights_file

__all__ = ["load_teacher", "freeze", "check_teacher_args", "RESERVED_TEACHER_KWARGS"]

#: set by the student's data, not by ``teacher_arch_kwargs``
RESERVED_TEACHER_KWARGS = ("num_classes", "in_channels", "mean", "std")


def check_teacher_args(arch: str, arch_kwargs: Optional[dict[str, Any]],
                       mean: Optional[list[float]], std: Optional[list[float]]) -> None:
    """Cheap checks of the teacher arguments (no model is built)."""
    try:
        model_class(arch)
    except ValueError as err:
        raise ValueError(f"teacher_arch={arch!r}: {err}") from None
    clash = sorted(set(arch_kwargs or {}) & set(RESERVED_TEACHER_KWARGS))
    if clash:
        raise ValueError(
            f"teacher_arch_kwargs sets {clash}; the teacher takes num_classes and in_channels from the student "
            f"(model.num_classes, model.in_channels) and its normalisation from teacher_mean/teacher_std"
        )
    if (mean is None) != (std is None):
        raise ValueError(f"give both teacher_mean and teacher_std or neither, got teacher_mean={mean}, "
                         f"teacher_std={std}")


def freeze(module: nn.Module) -> nn.Module:
    """Eval mode, no parameter gradients; returns ``module``."""
    module.eval()
    module.requires_grad_(False)
    return module


def _output_key(model: nn.Module, num_classes: int) -> Optional[str]:
    """The last state-dict entry sized by the number of classes (the classifier's bias/weight)."""
    keys = [k for k, v in model.state_dict().items() if v.dim() >= 1 and v.shape[0] == num_classes]
    return keys[-1] if keys else None


def _classes_in_checkpoint(path: Path, key: str) -> Optional[int]:
    """The first dimension of ``key`` (possibly behind a wrapper prefix) in the checkpoint file."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # unreadable: load_model_weights has said why
        return None
    if not isinstance(obj, Mapping):
        return None
    tables = [obj] + [v for v in obj.values() if isinstance(v, Mapping)]
    for table in tables:
        for k, v in table.items():
            if isinstance(k, str) and isinstance(v, Tensor) and v.dim() >= 1 and (k == key or k.endswith("." + key)):
                return int(v.shape[0])
    return None


def load_teacher(
    arch: str,
    checkpoint: Union[str, os.PathLike],
    num_classes: int,
    in_channels: int,
    mean: Optional[list[float]] = None,
    std: Optional[list[float]] = None,
    arch_kwargs: Optional[dict[str, Any]] = None,
) -> nn.Module:
    """Build ``arch`` with the student's classes and channels, load ``checkpoint``, freeze it.

    Args:
        arch: registered model name of the teacher (``teacher_arch``).
        checkpoint: its weights file (``teacher_checkpoint``).
        num_classes, in_channels: the student's (and the data's).
        mean, std: the teacher's own input normalisation (None: identity, as the TRADES
            and ARD teachers, which take raw [0, 1] images).
        arch_kwargs: further architecture arguments (e.g. ``depth``, ``widen_factor``).

    Returns:
        The teacher on the CPU, in eval mode, every parameter with ``requires_grad=False``.
    """
    check_teacher_args(arch, arch_kwargs, mean, std)
    if checkpoint is None or str(checkpoint) == "":
        raise ValueError("teacher_checkpoint is required to distil: give the path of the teacher's weights "
                         "(a .ckpt of this project or a state dict saved with torch.save)")
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(
            f"teacher_checkpoint='{path}' not found ({'it is a directory' if path.is_dir() else 'check the path'})"
        )
    kwargs = dict(arch_kwargs or {})
    try:
        teacher = create_model(arch, num_classes=num_classes, in_channels=in_channels, mean=mean, std=std, **kwargs)
    except ValueError as err:
        raise ValueError(f"cannot build the teacher teacher_arch={arch!r} with teacher_arch_kwargs={kwargs}: "
                         f"{err}") from err
    weights = load_weights_file(path, "teacher_checkpoint")  # a text file or pickled code: named, one line
    try:
        load_model_weights(teacher, weights)
    except ValueError as err:
        key = _output_key(teacher, num_classes)
        found = _classes_in_checkpoint(path, key) if key is not None else None
        if found is not None and found != num_classes:
            raise ValueError(
                f"the teacher in teacher_checkpoint='{path}' has {found} output classes ({key!r}), but the student "
                f"(model.num_classes) and its data have {num_classes}: distillation needs a teacher trained on "
                f"the student's classes"
            ) from err
        raise ValueError(
            f"teacher_checkpoint='{path}' does not hold weights of teacher_arch={arch!r} with "
            f"teacher_arch_kwargs={kwargs}: {err}"
        ) from err
    return freeze(teacher)
