"""One readable line for a bad input, out of jsonargparse's nested errors and Python's chains.

LightningCLI validates a config through jsonargparse, whose error for one bad nested value
(``--model.objective.init_args.attack.eps nan``) is 10-130 lines of ``Does not validate against any of the Union
subtypes`` with the useful sentence somewhere inside. :func:`one_line` finds it: the error
line under the deepest ``Parser key`` that is not jsonargparse's boilerplate, prefixed with
the dotted parameter path (``model.objective.attack.eps``), and says what to do for the common cases
(``nan``/``inf`` where a finite number is needed, a value of the wrong type, an unknown key).
``train.py`` prints that line last and exits with status 2; ``LIGHTNING_ADV_DEBUG=1`` prints
the full traceback before it.

The errors themselves and their plain one-line form live below the command line, in
:mod:`lightning_adv.errors`; this module only reads jsonargparse's messages for them.
"""
from __future__ import annotations

import argparse
import difflib
import importlib
import importlib.util
import pkgutil
import re
from typing import Any, Optional

from .errors import error_line

__all__ = ["ConfigError", "check_class_path", "nearest", "one_line"]


class ConfigError(ValueError):
    """A bad value found by the CLI itself (a checkpoint, a logger directory): a ValueError."""


_BOILERPLATE = (
    "Does not validate against any of the Union subtypes", "Subtypes:", "Errors:", "Problem with given class_path",
    "Expected a <class 'NoneType'>", "Given value type:", "Given value:", "Not a valid subclass of",
    "Subclass types expect", "Validation failed:", "Import path", "Parser key",
)
_KEY = re.compile(r'Parser key "([^"]+)"')
_EXPECTED = re.compile(r"Expected a <class '([\w.]+)'>\. Got value: (.*)$")
_EXPECTED_BARE = re.compile(r"Expected a <class '([\w.]+)'>$")
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
        return f"{name}={value.strip()!r} is not a valid {kind}; give {'an' if kind[0] in 'aeiou' else 'a'} {kind}"
    bare = _EXPECTED_BARE.match(line)
    if bare and bare.group(1) in ("float", "int"):  # jsonargparse names no value (an Optional number given nan)
        return f"{path or 'a value'} is not a valid {bare.group(1)}: give a finite number (nan and inf are not allowed)"
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


def one_line(exc: BaseException) -> Optional[str]:
    """The project's sentence for ``exc`` on one line (``None`` when it is not a user error): the plain
    :func:`~lightning_adv.errors.error_line`, with jsonargparse's nested messages read down to their sentence."""
    text = None
    if isinstance(exc, argparse.ArgumentError):
        text = _from_argparse(str(exc))
    elif "Parser key" in str(exc) or "Does not validate against" in str(exc):
        text = _from_argparse(str(exc))
    return error_line(exc, text)


def nearest(name: str, names: list[str], shown: int = 8) -> str:
    """``names`` ordered by similarity to ``name`` (difflib's ratio, nearest first), the first ``shown``."""
    key = name.lower()
    ranked = sorted(set(names), key=lambda n: (-difflib.SequenceMatcher(None, key, n.lower()).ratio(), n))
    more = f", ... ({len(ranked)} in all)" if len(ranked) > shown else ""
    return ", ".join(ranked[:shown]) + more


_DOTTED = re.compile(r"^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+$")


def check_class_path(where: str, path: Any) -> None:
    """A dotted class path that does not import is one line naming ``where``, the path and the names that
    exist there, nearest first (jsonargparse says "Expected a path but ... not accessible or invalid" and
    lists nothing). Values that are not dotted paths of an importable top-level package are left to
    jsonargparse (short class names, file paths)."""
    if not isinstance(path, str) or not _DOTTED.match(path):
        return
    parts = path.split(".")
    try:
        spec = importlib.util.find_spec(parts[0])
    except (ImportError, ValueError):
        return
    if spec is None or spec.origin is None:  # not importable, or a plain folder (``runs.exp1``: a namespace package)
        return
    module = None
    depth = len(parts) - 1
    while depth >= 1:  # the longest importable module prefix
        try:
            module = importlib.import_module(".".join(parts[:depth]))
            break
        except ModuleNotFoundError:
            depth -= 1
        except Exception:  # noqa: BLE001 - a module that fails for another reason: jsonargparse reports it
            return
    if module is None:
        return
    obj: Any = module
    for i in range(depth, len(parts)):
        if not hasattr(obj, parts[i]):
            names = [n for n, v in vars(obj).items() if not n.startswith("_") and
                     (isinstance(v, type) or type(v).__name__ == "module")]
            if hasattr(obj, "__path__"):  # a package: its submodules too
                names += [m.name for m in pkgutil.iter_modules(obj.__path__) if not m.name.startswith("_")]
            where_ = ".".join(parts[:i])
            raise ConfigError(f"{where}: class path {path!r} does not exist ({where_} has no {parts[i]!r}); "
                              f"names in {where_}, nearest first: {nearest(parts[i], names)}")
        obj = getattr(obj, parts[i])
