"""The few-shot extra: learn2learn (and qpth) are imported only where few-shot code needs them.

``pip install .`` leaves them out (learn2learn 0.2.0's sdist does not build on Python 3.11+ as
published); ``bash scripts/dev.sh setup`` builds learn2learn and installs ``lightning-adv[fewshot]``
(docs/installation.md, "The few-shot extra"). A few-shot class used without them stops at its
construction with :class:`MissingExtraError`, one line naming the extra and the set-up command.
"""
from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["MissingExtraError", "require_fewshot"]


class MissingExtraError(ModuleNotFoundError):
    """An optional dependency of the class being built is not installed (a user error: one line)."""


def require_fewshot(what: str, module: str = "learn2learn") -> ModuleType:
    """``module`` (learn2learn or qpth) imported for ``what``; :class:`MissingExtraError` when absent."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingExtraError(
            f"{what} needs {module}, part of the few-shot extra lightning-adv[fewshot], which is not installed: "
            f"run `bash scripts/dev.sh setup` in the checkout (it builds learn2learn and installs '.[fewshot]'; "
            f"docs/installation.md#the-few-shot-extra)", name=module) from err
