"""One readable line for a bad input, out of jsonargparse's nested errors and Python's chains.

LightningCLI validates a config through jsonargparse, whose error for one bad nested value
(``--model.attack.eps nan``) is 10-130 lines of ``Does not validate against any of the Union
subtypes`` with the useful sentence somewhere inside. :func:`one_line` finds it: the error
line under the deepest ``Parser key`` that is not jsonargparse's boilerplate, prefixed with
the dotted parameter path (``model.attack.eps``), and says what to do for the common cases
(``nan``/``inf`` where a finite number is needed, a value of the wrong type, an unknown key).
``train.py`` prints that line last and exits with status 2; ``LIGHTNING_ADV_DEBUG=1`` prints
the full traceback before it.
"""
from __future__ import annotations

import argparse
import re
from typing import Optional

from .extras import MissingExtraError  # a few-shot class without the few-shot extra

__all__ = ["ConfigError", "NonFiniteTrainingError", "is_user_error", "one_line"]


class ConfigError(ValueError):
    """A bad value found by the CLI itself (a checkpoint, a logger directory): a ValueError."""


class NonFiniteTrainingError(RuntimeError):
    """The loss or the weights became NaN/inf during training (see ``lightning_adv.callbacks.FiniteGuard``)."""


_BOILERPLATE = (
    "Does not validate against any of the Union subtypes", "Subtypes:", "Errors:", "Problem with given class_path",
    "Expected a <class 'NoneType'>", "Given value type:", "Given value:", "Not a valid subclass of",
    "Subclass types expect", "Validation failed:", "Import path", "Parser key",
)
_KEY = re.compile(r'Parser key "([^"]+)"')
_EXPECTED = re.compile(r"Expected a <class '([\w.]+)'>\. Got value: (.*)$")
_NONFINITE = {"nan", "inf", "-inf", "+inf", "infinity", "-infinity", ".nan", ".inf", "-.inf"}


def _candidates(text: str) -> list[tuple[str, str]]:
    """(dotted parameter path, message line) for each non-boilerplate line, in order."""
    stack: list[tuple[int, str]] = []
    out = []
    for raw in text.splitlines():
        if not raw.strip():
            continue
        indent = len(raw) - len(raw.lstrip(" -"))
        line = raw.strip().lstrip("- ").strip()
        while stack and stack[-1][0] >= indent:
            stack.pop()
        key = _KEY.match(line)
        if key:
            stack.append((indent, key.group(1)))
            continue
        if line.startswith(_BOILERPLATE):
            continue
        out.append((".".join(k for _, k in stack), line))
    return out


def _phrase(path: str, line: str) -> str:
    expected = _EXPECTED.match(line)
    if expected:
        kind, value = expected.groups()
        name = path or "a value"
        if kind in ("float", "int") and value.strip().lower() in _NONFINITE:
            return f"{name}={value.strip()} is not a finite number; give a finite {kind}"
        return f"{name}={value.strip()!r} is not a valid {kind}; give a {kind}"
    if any(t in line.lower() for t in ("is not accepted", "is not expected", "unrecognized arguments")):
        line += " (a misspelt or unknown parameter; `python train.py fit --model.help <class_path>` lists them)"
    return f"{path}: {line}" if path and not line.startswith(path.split(".")[-1]) else line


def _from_argparse(text: str) -> str:
    cands = _candidates(text)
    if not cands:
        return text.strip().splitlines()[-1] if text.strip() else "invalid configuration"
    depth = max(len(p.split(".")) if p else 0 for p, _ in cands)
    path, line = next((p, ln) for p, ln in cands if (len(p.split(".")) if p else 0) == depth)
    return _phrase(path, line)


def is_user_error(exc: BaseException) -> bool:
    """Bad input (a config or an argument) or a stopped non-finite run, not a crash of the code."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException  # Lightning's own bad-argument error

    return isinstance(exc, (ValueError, argparse.ArgumentError, FileNotFoundError, NonFiniteTrainingError,
                            MisconfigurationException, MissingExtraError))


def one_line(exc: BaseException) -> Optional[str]:
    """The project's sentence for ``exc`` on one line (``None`` when it is not a user error)."""
    if not is_user_error(exc):
        return None
    if isinstance(exc, argparse.ArgumentError):
        text = _from_argparse(str(exc))
    else:
        text = str(exc).strip() or type(exc).__name__
        if "Parser key" in text or "Does not validate against" in text:
            text = _from_argparse(text)
    text = " ".join(part.strip() for part in text.splitlines() if part.strip())
    return f"error: {text}"
