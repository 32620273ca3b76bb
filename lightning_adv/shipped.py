"""The configs shipped with the package: ``--config configs/X.yaml`` works from any directory.

In a checkout the configs are the folder ``configs/``; an installed package (``pip install .``, a
wheel) carries the same files as package data in ``lightning_adv/configs/`` (pyproject.toml maps
``lightning_adv.configs`` onto ``configs/``). :func:`resolve_config_args` lets the documented
commands (``lightning-adv fit --config configs/quickstart.yaml``) run unchanged outside the checkout:
a ``--config`` path that does not exist from the working directory but names a shipped config is
replaced by the shipped file, and the substitution is printed (a file in the working directory always
wins, so a user's own copy is never shadowed).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

__all__ = ["shipped_configs_dir", "resolve_config_args"]

_CONFIG_FLAGS = ("--config", "-c")


def shipped_configs_dir() -> Optional[Path]:
    """``lightning_adv/configs`` when installed, the checkout's ``configs/`` otherwise (None if neither)."""
    here = Path(__file__).resolve().parent
    if (here / "configs").is_dir():
        return here / "configs"
    root = here.parent
    if (root / "pyproject.toml").is_file() and (root / "configs").is_dir():
        return root / "configs"
    return None


def _shipped(value: str, folder: Path) -> Optional[Path]:
    path = Path(value)
    if path.is_absolute() or path.exists():
        return None
    parts = path.parts[1:] if path.parts[:1] == ("configs",) else path.parts
    candidate = folder.joinpath(*parts) if parts else None
    return candidate if candidate is not None and candidate.is_file() else None


def resolve_config_args(args: list[str]) -> list[str]:
    """``args`` with each ``--config X`` / ``--config=X`` that is missing here but shipped replaced."""
    folder = shipped_configs_dir()
    if folder is None:
        return list(args)
    out: list[str] = []
    for i, value in enumerate(args):
        flag, eq, given = value.partition("=")
        if eq and flag in _CONFIG_FLAGS:
            found = _shipped(given, folder)
            out.append(f"{flag}={found}" if found else value)
        elif i > 0 and args[i - 1] in _CONFIG_FLAGS:
            found = _shipped(value, folder)
            out.append(str(found) if found else value)
        else:
            found = None
            out.append(value)
        if found is not None:
            print(f"--config {given if eq else value}: not in {Path.cwd()}; using the shipped {found}",
                  file=sys.stderr, flush=True)
    return out
