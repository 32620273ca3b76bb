"""How a classifier module runs on its device: memory format and ``torch.compile``, one typed config.

Mixed precision is not here: it is the Trainer's (``--trainer.precision bf16-mixed`` /
``16-mixed``), and the attack engine is written to be correct under it
(``docs/precision.md``). What a module decides itself:

* ``memory_format: channels_last`` puts the convolution weights and every 4-D input of the
  backbone (a forward pre-hook) in NHWC order (faster convolutions on tensor-core GPUs); the numbers are those of the
  default ``contiguous_format`` up to float rounding.
* ``compile: true`` compiles the backbone's forward with ``nn.Module.compile`` (in place), so
  the state-dict keys stay those of the eager model: a checkpoint written with compile on
  loads with it off and the other way round (keys carrying the ``_orig_mod.`` prefix of a
  ``torch.compile(model)`` wrapper are stripped on load as well). Attacks differentiate
  through the compiled forward like through the eager one.
"""
from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass
from typing import Any, Optional

import torch
from torch import Tensor, nn

__all__ = ["ComputeConfig", "MEMORY_FORMATS", "COMPILE_MODES", "strip_compile_prefix"]

MEMORY_FORMATS = ("contiguous_format", "channels_last")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
_COMPILE_PREFIX = "_orig_mod."


def _compile_supported() -> bool:
    """Whether this torch and Python can run ``torch.compile`` (TorchDynamo)."""
    if not hasattr(torch, "compile") or not hasattr(nn.Module, "compile"):
        return False
    try:
        import torch._dynamo as dynamo
    except Exception:  # pragma: no cover - a torch built without dynamo
        return False
    return bool(dynamo.is_dynamo_supported())


@dataclass(frozen=True)
class ComputeConfig:
    """Memory format and compilation of a classifier module's backbone (``model.compute`` in YAML).

    Args:
        memory_format: ``contiguous_format`` (default) or ``channels_last`` (image models with
            convolutions only; the weights and every 4-D input batch are converted).
        compile: compile the backbone's forward with ``torch.compile`` (``nn.Module.compile``).
        compile_mode: ``torch.compile``'s ``mode`` (``default``, ``reduce-overhead``,
            ``max-autotune``, ``max-autotune-no-cudagraphs``).
        compile_backend: ``torch.compile``'s ``backend``: ``inductor`` (default, generates
            kernels; on CPU it needs a C++ compiler) or ``aot_eager`` (traces forward and
            backward, runs them eagerly: a quick check that a model compiles).
    """

    memory_format: str = "contiguous_format"
    compile: bool = False
    compile_mode: str = "default"
    compile_backend: str = "inductor"

    def __post_init__(self) -> None:
        if self.memory_format not in MEMORY_FORMATS:
            raise ValueError(f"compute.memory_format={self.memory_format!r} is not one of {MEMORY_FORMATS}")
        if not isinstance(self.compile, bool):
            raise ValueError(f"compute.compile must be true or false, got compile={self.compile!r}")
        if self.compile_mode not in COMPILE_MODES:
            raise ValueError(f"compute.compile_mode={self.compile_mode!r} is not one of {COMPILE_MODES}")
        if not isinstance(self.compile_backend, str) or not self.compile_backend:
            raise ValueError(f"compute.compile_backend must be a backend name such as 'inductor' or 'aot_eager', "
                             f"got compile_backend={self.compile_backend!r}")
        if self.compile and not _compile_supported():
            import sys

            raise ValueError(f"compute.compile=true needs torch.compile, which torch {torch.__version__} on Python "
                             f"{sys.version.split()[0]} does not support; set compute.compile: false")

    @property
    def channels_last(self) -> bool:
        return self.memory_format == "channels_last"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def coerce(cls, value: Any) -> "ComputeConfig":
        """A config from an instance, a mapping of its fields, or None (the defaults)."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, dict):
            fields = set(cls.__dataclass_fields__)
            unknown = sorted(set(value) - fields)
            if unknown:
                raise ValueError(f"compute has no field(s) {unknown}; it takes {sorted(fields)}")
            return cls(**value)
        raise ValueError(f"compute must be a ComputeConfig or a mapping of its fields, got {type(value).__name__}")

    def check_model(self, model: nn.Module, arch: str) -> None:
        """channels_last needs 2-D convolutions (a model without any gains nothing and is likely
        not an image model, e.g. an MLP on order-book features)."""
        if self.channels_last and not any(isinstance(m, nn.Conv2d) for m in model.modules()):
            raise ValueError(f"compute.memory_format='channels_last' needs an image model with 2-D convolutions; "
                             f"arch={arch!r} has none: use memory_format: contiguous_format")

    def check_input_shape(self, shape: Optional[tuple[int, ...]], data_name: str) -> None:
        """channels_last needs (C, H, W) images."""
        if self.channels_last and shape is not None and len(shape) != 3:
            raise ValueError(f"compute.memory_format='channels_last' needs (C, H, W) images, but the data "
                             f"({data_name}) has input shape {tuple(shape)}; use memory_format: contiguous_format")

    def check_device(self, accelerator_type: str) -> None:
        """Inductor on CPU writes C++: refuse early (not at the first step) when no compiler is found."""
        if (self.compile and self.compile_backend == "inductor" and accelerator_type == "cpu"
                and not any(shutil.which(c) for c in ("c++", "g++", "clang++", "cl"))):
            raise ValueError("compute.compile=true with compile_backend='inductor' on CPU needs a C++ compiler, and "
                             "none was found on PATH; install one (g++) or set compute.compile_backend: aot_eager")

    def apply(self, model: nn.Module) -> nn.Module:
        """Convert ``model`` in place (memory format, then compile); returns it."""
        if self.channels_last:
            # every input the model sees (training batches, attack iterates, the evaluator's inputs) is
            # converted by a forward hook: one place, and Lightning's batch-transfer hooks stay free
            model.to(memory_format=torch.channels_last)
            model.register_forward_pre_hook(_inputs_channels_last)
        if self.compile:
            model.compile(mode=None if self.compile_mode == "default" else self.compile_mode,
                          backend=self.compile_backend)
        return model


def _inputs_channels_last(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Forward pre-hook: 4-D floating-point inputs (image batches) in channels_last."""
    return tuple(a.contiguous(memory_format=torch.channels_last)
                 if isinstance(a, Tensor) and a.dim() == 4 and a.is_floating_point() else a for a in args)


def strip_compile_prefix(state_dict: dict[str, Any]) -> dict[str, Any]:
    """State-dict keys without the ``_orig_mod.`` a ``torch.compile(module)`` wrapper adds (in place)."""
    for key in [k for k in state_dict if _COMPILE_PREFIX in k]:
        state_dict[key.replace(_COMPILE_PREFIX, "")] = state_dict.pop(key)
    return state_dict
