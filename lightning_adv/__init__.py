"""lightning-adv: adversarial robustness methods as Lightning modules.

The datamodules and callbacks live in the checkout's top-level folders ``datamodules/`` and
``callbacks/`` but are installed as ``lightning_adv.datamodules`` and
``lightning_adv.callbacks`` (``pyproject.toml`` maps them), so that no top-level import
name collides with another project. A checkout imports them through its editable install
(``bash scripts/dev.sh setup``, or ``pip install -e . --no-deps`` in a venv that has the
dependencies: docs/installation.md, "A second checkout"); an install made for another checkout
is refused here, with that line, rather than mixing two checkouts' code.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

__version__ = "0.1.0"


def _check_mapped_folders() -> None:
    here = Path(__file__).resolve().parent
    for name in ("datamodules", "callbacks"):
        spec = importlib.util.find_spec(f"{__name__}.{name}")
        origin = None if spec is None or spec.origin is None else Path(spec.origin).resolve().parent
        if origin is None or origin.parent not in (here, here.parent):
            found = "is not installed" if origin is None else f"resolves to {origin} (another checkout's install)"
            raise ImportError(f"{__name__}.{name} {found}: run `pip install -e . --no-deps` in {here.parent} "
                              f"(docs/installation.md#a-second-checkout)")


_check_mapped_folders()
