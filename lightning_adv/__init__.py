"""lightning-adv: adversarial robustness methods as Lightning modules.

The datamodules and callbacks live in the checkout's top-level folders ``datamodules/`` and
``callbacks/`` but are installed as ``lightning_adv.datamodules`` and
``lightning_adv.callbacks`` (``pyproject.toml`` maps them), so that no top-level import
name collides with another project. When this package is imported from a source checkout
that is not installed (``python train.py`` in the clone, ``PYTHONPATH=.``), the same two
names resolve to those folders through :class:`_CheckoutFolders`.
"""
from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from pathlib import Path

__version__ = "0.1.0"

_MAPPED = ("datamodules", "callbacks")


class _CheckoutFolders(importlib.abc.MetaPathFinder):
    """Finds ``lightning_adv.datamodules`` / ``lightning_adv.callbacks`` in a source checkout."""

    def __init__(self, folders: dict[str, Path]):
        self.folders = folders

    def find_spec(self, fullname, path=None, target=None):
        folder = self.folders.get(fullname)
        if folder is None:
            return None
        return importlib.util.spec_from_file_location(
            fullname, folder / "__init__.py", submodule_search_locations=[str(folder)])


def _checkout_folders() -> dict[str, Path]:
    here = Path(__file__).resolve().parent
    root = here.parent
    if not (root / "pyproject.toml").is_file():
        return {}
    return {f"{__name__}.{name}": root / name for name in _MAPPED
            if not (here / name).is_dir() and (root / name / "__init__.py").is_file()}


_folders = _checkout_folders()
if _folders and not any(isinstance(f, _CheckoutFolders) for f in sys.meta_path):
    # ahead of an editable install's finder, so that a second checkout (a git worktree) imports its own folders
    sys.meta_path.insert(0, _CheckoutFolders(_folders))
