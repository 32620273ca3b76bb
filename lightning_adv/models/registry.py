"""Model registry (``create_model(name, **kwargs)``, timm-style) and checkpoint loading.

A registry entry is a model class (or any callable returning an ``nn.Module``) plus an
optional *preset*: keyword arguments fixed by the registered name. ``resnet18_noskip`` is
the ``ResNet18`` class with ``skip=False``; ``wrn34_10`` is ``WideResNet`` with
``depth=34, widen_factor=10``. A preset argument cannot be overridden through
``create_model`` (asking ``wrn34_10`` for ``depth=28`` is a contradiction and raises);
use the generic name (``wideresnet``) instead.

Weights are loaded with :func:`load_model_weights`, which only ever calls
``torch.load(..., weights_only=True)`` (design decision 9: checkpoints are data, not code).
"""
from __future__ import annotations

import inspect
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, TypeVar, Union

from torch import Tensor, nn

from ..validation import load_weights_file

__all__ = [
    "register_model",
    "create_model",
    "list_models",
    "model_class",
    "model_preset",
    "load_model_weights",
]

F = TypeVar("F", bound=Callable[..., nn.Module])
M = TypeVar("M", bound=nn.Module)


@dataclass(frozen=True)
class _Entry:
    factory: Callable[..., nn.Module]
    preset: Mapping[str, Any] = field(default_factory=dict)


_REGISTRY: dict[str, _Entry] = {}


def _accepted_parameters(factory: Callable[..., Any]) -> Optional[set[str]]:
    """Keyword parameters ``factory`` accepts, or None when it takes ``**kwargs``."""
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):  # builtins without a signature
        return None
    names: set[str] = set()
    for p in sig.parameters.values():
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            return None
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY):
            names.add(p.name)
    names.discard("self")
    return names


def register_model(name: str, **preset: Any) -> Callable[[F], F]:
    """Decorator that registers a model class (or factory) under ``name``.

    ``preset`` keyword arguments are fixed for this name, e.g.
    ``register_model("resnet18_noskip", skip=False)(ResNet18)``. The decorated object is
    returned unchanged, so the decorator can be stacked to register several presets of
    one class. Registering a taken name with a different factory or preset raises.
    """
    if not isinstance(name, str) or not name or name != name.strip():
        raise ValueError(f"model name must be a non-empty string without surrounding spaces, got {name!r}")

    def decorator(factory: F) -> F:
        if not callable(factory):
            raise TypeError(f"register_model({name!r}) must decorate a class or callable, got {factory!r}")
        accepted = _accepted_parameters(factory)
        if accepted is not None:
            unknown = sorted(set(preset) - accepted)
            if unknown:
                raise ValueError(
                    f"preset of model {name!r} sets {unknown}, which {getattr(factory, '__name__', factory)} "
                    f"does not accept; accepted: {sorted(accepted)}"
                )
        entry = _Entry(factory, dict(preset))
        old = _REGISTRY.get(name)
        if old is not None and (old.factory is not factory or dict(old.preset) != dict(preset)):
            raise ValueError(
                f"model name {name!r} is already registered to {getattr(old.factory, '__qualname__', old.factory)}"
                f" with preset {dict(old.preset)}; choose another name"
            )
        _REGISTRY[name] = entry
        return factory

    return decorator


def list_models() -> list[str]:
    """All registered model names, sorted."""
    return sorted(_REGISTRY)


def _entry(name: str) -> _Entry:
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown model {name!r} (parameter `arch`); available: {', '.join(list_models())}"
        ) from None


def model_class(name: str) -> Callable[..., nn.Module]:
    """The class (or factory) registered under ``name``; see :func:`model_preset` for its fixed arguments."""
    return _entry(name).factory


def model_preset(name: str) -> dict[str, Any]:
    """The keyword arguments that ``name`` fixes (empty for a plain class registration)."""
    return dict(_entry(name).preset)


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the model registered as ``name`` with ``kwargs`` (plus the name's preset).

    Raises ``ValueError`` for an unknown name (listing the available ones), for a keyword
    the model does not take (listing those it takes), for a keyword that contradicts the
    name's preset, and for any invalid argument value (raised by the model itself).
    """
    entry = _entry(name)
    clash = {k: v for k, v in kwargs.items() if k in entry.preset and entry.preset[k] != v}
    if clash:
        generic = [n for n in list_models() if _REGISTRY[n].factory is entry.factory and not _REGISTRY[n].preset]
        raise ValueError(
            f"model {name!r} fixes {dict(entry.preset)}, but got {clash}; "
            f"use the generic registration of {getattr(entry.factory, '__name__', 'this model')} "
            f"({', '.join(generic) or 'none'})"
            f" to choose these arguments freely"
        )
    accepted = _accepted_parameters(entry.factory)
    if accepted is not None:
        unknown = sorted(set(kwargs) - accepted)
        if unknown:
            raise ValueError(
                f"model {name!r} does not take the argument(s) {unknown}; it accepts: {sorted(accepted)}"
            )
    return entry.factory(**{**entry.preset, **kwargs})


# --------------------------------------------------------------------------------------
# Checkpoint loading
# --------------------------------------------------------------------------------------

_CONTAINER_KEYS = ("state_dict", "net", "model")
# Prefixes that wrappers put in front of a backbone's keys: a LightningModule holding the
# net as ``self.model``, (Distributed)DataParallel's ``module.`` and torch.compile's ``_orig_mod.``.
_WRAPPER_PREFIXES = ("model.", "module.", "_orig_mod.")


def _describe(model: nn.Module) -> str:
    cls = type(model)
    names = [n for n in list_models() if _REGISTRY[n].factory is cls]
    n_params = sum(p.numel() for p in model.parameters())
    reg = f", registered as {', '.join(repr(n) for n in names)}" if names else ""
    return f"{cls.__name__} ({n_params / 1e6:.2f}M parameters{reg})"


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()
    )


def _extract_state_dict(obj: Any, source: str) -> dict[str, Tensor]:
    """The tensors of a raw state dict or of a ``{'state_dict'|'net'|'model': ...}`` checkpoint."""
    if _is_state_dict(obj):
        return dict(obj)
    if isinstance(obj, Mapping):
        for key in _CONTAINER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner:
                tensors = {k: v for k, v in inner.items() if isinstance(k, str) and isinstance(v, Tensor)}
                if tensors:
                    return tensors
        keys = ", ".join(repr(k) for k in list(obj)[:10])
        raise ValueError(
            f"{source} holds no model weights: expected a state dict (name -> tensor) or a dict with one of "
            f"the keys {list(_CONTAINER_KEYS)} holding one; its top-level keys are: {keys}"
        )
    raise ValueError(
        f"{source} holds a {type(obj).__name__}, not model weights: expected a state dict (name -> tensor) "
        f"or a dict with one of the keys {list(_CONTAINER_KEYS)}"
    )


def _strip_wrapper_prefixes(
    state: dict[str, Tensor], model_keys: set[str], key_prefix: Optional[str]
) -> dict[str, Tensor]:
    """Remove wrapper prefixes the model's own keys do not have.

    With ``key_prefix`` only that prefix is selected and stripped. Otherwise, for each of
    ``model.`` (Lightning), ``module.`` (DataParallel) and ``_orig_mod.`` (a ``torch.compile``
    wrapper), repeatedly: if the checkpoint has
    keys with the prefix and the model has none, keep only the prefixed keys, stripped
    (a Lightning checkpoint may also hold e.g. a teacher's ``teacher.*`` keys, which do
    not belong to this model).
    """
    if key_prefix is not None:
        selected = {k[len(key_prefix):]: v for k, v in state.items() if k.startswith(key_prefix)}
        if not selected:
            sample = ", ".join(repr(k) for k in list(state)[:5])
            raise ValueError(f"no checkpoint key starts with key_prefix={key_prefix!r}; keys look like: {sample}")
        state = selected
    changed = True
    while changed:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if any(k.startswith(prefix) for k in model_keys):
                continue
            selected = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            if selected:
                state = selected
                changed = True
    return state


def _fmt_keys(items: list[str], limit: int = 5, quote: bool = True) -> str:
    shown = ", ".join(repr(k) if quote else k for k in items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def load_model_weights(
    model: M,
    path_or_state_dict: Union[str, os.PathLike, Mapping[str, Any]],
    strict: bool = True,
    key_prefix: Optional[str] = None,
) -> M:
    """Load weights into ``model`` in place and return it.

    Args:
        model: the freshly built architecture the weights belong to.
        path_or_state_dict: a file written by ``torch.save`` or an in-memory dict. Accepted
            layouts: a raw state dict; ``{'state_dict': ...}`` (Lightning checkpoint; a
            leading ``model.`` is stripped from its keys and keys without it are ignored);
            ``{'net': ...}`` (ARD / kuangliu checkpoints) or ``{'model': ...}``. A
            ``module.`` prefix (DataParallel, e.g. released TRADES checkpoints) is
            stripped. Prefixes the model's own keys carry are left alone.
        strict: require the checkpoint keys to match the model's exactly. With
            ``strict=False`` the matching subset is loaded and the rest is reported in a
            warning; shape mismatches always raise.
        key_prefix: select and strip this prefix first (e.g. ``"student."`` to take the
            student out of a LightningModule checkpoint that keeps it as ``self.student``).

    Files are read with ``torch.load(path, map_location="cpu", weights_only=True)`` only:
    a checkpoint that needs arbitrary code to unpickle is refused, never executed.

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: the file cannot be read as weights, or the keys/shapes do not fit
            ``model`` (the message names the expected architecture and lists missing,
            unexpected and mis-shaped keys).
    """
    if isinstance(path_or_state_dict, Mapping):
        source = "the given state dict"
        obj: Any = path_or_state_dict
    elif isinstance(path_or_state_dict, (str, os.PathLike)):
        path = Path(path_or_state_dict)
        source = f"checkpoint '{path}'"
        obj = load_weights_file(path, "path_or_state_dict")
    else:
        raise ValueError(
            f"path_or_state_dict must be a file path or a state dict, got {type(path_or_state_dict).__name__}"
        )

    state = _extract_state_dict(obj, source)
    expected = model.state_dict()
    state = _strip_wrapper_prefixes(state, set(expected), key_prefix)

    # BatchNorm fills in a missing ``num_batches_tracked`` itself (checkpoints from
    # PyTorch < 0.4.1 lack it), so it does not count as missing.
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k!r}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    matched = [k for k in expected if k in state]
    if mismatched or not matched or (strict and (missing or unexpected)):
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s): {_fmt_keys(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): {_fmt_keys(unexpected)}")
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatch(es): {_fmt_keys(mismatched, 3, quote=False)}")
        raise ValueError(
            f"the weights in {source} do not fit the expected architecture {_describe(model)}: "
            + "; ".join(parts)
            + ". Check that `arch` and its arguments (num_classes, in_channels, depth, widen_factor, skip, ...) "
            "match the checkpoint"
            + (", or pass strict=False to load only the matching keys" if strict and matched and not mismatched else "")
        )
    if not strict and (missing or unexpected):
        warnings.warn(
            f"load_model_weights(strict=False) into {type(model).__name__}: "
            + (f"left {len(missing)} key(s) at their initial values ({_fmt_keys(missing)})" if missing else "")
            + ("; " if missing and unexpected else "")
            + (f"ignored {len(unexpected)} checkpoint key(s) ({_fmt_keys(unexpected)})" if unexpected else ""),
            stacklevel=2,
        )
        state = {k: v for k, v in state.items() if k in expected}
    model.load_state_dict(state, strict=strict)
    return model
