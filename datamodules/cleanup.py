"""Leftovers of an interrupted extraction or copy: removed by the next run.

Extraction and verified copies write to ``<name>.partial<pid>`` / ``.<name>.<pid>.tmp`` and
rename into place when complete, so a killed run never leaves a half-written file under the
final name; :func:`remove_stale` deletes such leftovers whose process is gone (a live one may
still be writing: under DDP every rank may prepare the same folder).
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

__all__ = ["pid_alive", "remove_stale"]


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(folder: Path, pattern: str) -> list[Path]:
    """Delete entries of ``folder`` whose name fully matches ``pattern`` (a regex with a ``pid`` group)
    and whose process is no longer running; return what was removed."""
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    regex = re.compile(pattern)
    for entry in folder.iterdir():
        match = regex.fullmatch(entry.name)
        if match is None or pid_alive(int(match.group("pid"))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed
