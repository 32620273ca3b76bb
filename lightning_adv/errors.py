"""The errors that the library raises for bad input or a failed run, and their one-line form.

Library code (callbacks, modules, data modules) raises these and writes :func:`error_line`; the
command line (:mod:`lightning_adv.cli_errors`) only adds the reading of jsonargparse's nested
messages on top. Argument errors themselves are ``ValueError``\\s (and
:class:`~lightning_adv.validation.ArgumentTypeError`) raised by :mod:`lightning_adv.validation`.
"""
from __future__ import annotations

import argparse
from typing import Optional

from .extras import MissingExtraError  # a few-shot class without the few-shot extra

__all__ = ["NonFiniteTrainingError", "error_line", "is_user_error"]


class NonFiniteTrainingError(RuntimeError):
    """The loss or the weights became NaN/inf during training (see ``lightning_adv.callbacks.FiniteGuard``)."""


def is_user_error(exc: BaseException) -> bool:
    """Bad input (a config or an argument) or a stopped non-finite run, not a crash of the code."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException  # Lightning's own bad-argument error

    return isinstance(exc, (ValueError, argparse.ArgumentError, FileNotFoundError, NonFiniteTrainingError,
                            MisconfigurationException, MissingExtraError))


def error_line(exc: BaseException, text: Optional[str] = None) -> Optional[str]:
    """``error: <the message of exc>`` on one line (``text`` instead of ``str(exc)`` when given), or ``None``
    when ``exc`` is not a user error (a crash keeps its traceback)."""
    if not is_user_error(exc):
        return None
    text = text if text is not None else (str(exc).strip() or type(exc).__name__)
    return "error: " + " ".join(part.strip() for part in text.splitlines() if part.strip())
