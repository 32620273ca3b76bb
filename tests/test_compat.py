"""The pre-objective arguments and their conversion live in ``lightning_adv.compat``, which only the
converter script imports: the library, its callbacks and data modules never load it."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_IMPORT_ALL = """
import importlib, pkgutil, sys
import lightning_adv
names = []
for pkg in ("lightning_adv", "lightning_adv.callbacks", "lightning_adv.datamodules"):
    mod = importlib.import_module(pkg)
    names += [m.name for m in pkgutil.walk_packages(mod.__path__, pkg + ".") if not m.name.endswith(".compat")]
for name in names:
    importlib.import_module(name)
assert len(names) > 50, names
print(len(names), "lightning_adv.compat" in sys.modules)
"""


def test_no_library_module_imports_the_compat_module():
    proc = subprocess.run([sys.executable, "-c", _IMPORT_ALL], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    count, loaded = proc.stdout.split()
    assert loaded == "False", f"importing the {count} library modules loaded lightning_adv.compat"
