"""The linter and the type checker pass on the checkout, with the configuration of pyproject.toml.

``python -m ruff check`` and ``python -m mypy`` (no arguments) run alone the same checks
(docs/testing.md, "Lint and types"). Each test shows the tool's report when it fails. The two
``*_reads_the_configuration`` tests check that the configuration is the one in force: a check that
selects nothing would pass any code.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, input=stdin, capture_output=True, text=True,
                          timeout=600)


def _report(proc: subprocess.CompletedProcess) -> str:
    return f"exit {proc.returncode}\n{proc.stdout}{proc.stderr}"


def test_ruff_is_clean():
    proc = _run("ruff", "check", "--no-cache")
    assert proc.returncode == 0, _report(proc)


def test_ruff_reads_the_configuration():
    """pyflakes (an unused import), bugbear (a mutable default) and the line length of pyproject.toml."""
    code = "import os\n\n\ndef f(x=[]):\n    return x\n\n\nY = '" + "y" * 130 + "'\n"
    proc = _run("ruff", "check", "--no-cache", "--output-format", "concise", "--stdin-filename",
                "lightning_adv/_probe.py", "-", stdin=code)
    assert proc.returncode == 1, _report(proc)
    for rule in ("F401", "B006", "E501"):
        assert rule in proc.stdout, _report(proc)


def test_mypy_is_clean():
    proc = _run("mypy")
    assert proc.returncode == 0, _report(proc)
    assert "Success: no issues found" in proc.stdout, _report(proc)


def test_mypy_reads_the_configuration(tmp_path):
    """check_untyped_defs: the body of a function without annotations is checked too."""
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    x: int = 'a'\n    return x\n")
    proc = _run("mypy", str(probe))
    assert proc.returncode == 1, _report(proc)
    assert "Incompatible types in assignment" in proc.stdout, _report(proc)
