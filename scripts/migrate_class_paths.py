"""Rewrite the first version's top-level import names to the ``lightning_adv`` namespace.

Up to version 0.1 the datamodules and callbacks were installed as the top-level packages
``datamodules`` and ``callbacks``, names that collide with other projects in a user's
environment. They are now ``lightning_adv.datamodules`` and ``lightning_adv.callbacks``
(the source folders keep their place at the top of the checkout; ``pyproject.toml`` maps
them). This script rewrites configs, scripts and notes in place:

    python scripts/migrate_class_paths.py my_config.yaml my_script.py docs/

* ``class_path: datamodules.CIFAR10DataModule`` -> ``lightning_adv.datamodules.CIFAR10DataModule``
* ``from callbacks import PGDEvaluation`` -> ``from lightning_adv.callbacks import PGDEvaluation``
* renamed classes (``lightning_adv.cli_paths.RENAMED_CLASS_PATHS``):
  ``class_path: lightning_adv.attacks.PGDAttack`` -> ``lightning_adv.attacks.PGD`` (and ``FGSMAttack`` -> ``FGSM``)

Only dotted names that start one of the two packages' known submodules or exported names
are rewritten (``trainer.callbacks``, ``lightning.pytorch.callbacks.X`` or a local list
``callbacks.append(...)`` are left alone). Running it twice changes nothing.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # a checkout that is not installed

from lightning_adv.cli_paths import RENAMED_CLASS_PATHS  # noqa: E402

SUFFIXES = {".py", ".yaml", ".yml", ".md", ".sh", ".txt", ".toml", ".cfg", ".ipynb"}


def _names(package: str) -> set[str]:
    """Submodules and ``__all__`` of one of the two packages, read from the source tree."""
    folder = ROOT / package
    names = {p.stem for p in folder.glob("*.py") if p.stem != "__init__"}
    text = (folder / "__init__.py").read_text()
    match = re.search(r"__all__\s*=\s*\[(.*?)\]", text, re.S)
    if match:
        names.update(re.findall(r"[\"'](\w+)[\"']", match.group(1)))
    return names


def _patterns() -> list[tuple[re.Pattern, str]]:
    rules = []
    for package in ("datamodules", "callbacks"):
        # import statements: `from callbacks import X`, `from callbacks.resume import Y`
        rules.append((re.compile(rf"(?m)^(\s*from\s+){package}(?=[\s.])"), rf"\1lightning_adv.{package}"))
        # `import datamodules` binds a new name; rewrite to an alias that keeps it bound
        rules.append((re.compile(rf"(?m)^(\s*)import\s+{package}\s*$"), rf"\1from lightning_adv import {package}"))
        # dotted names in configs, strings and docs
        alternatives = "|".join(sorted(_names(package), key=len, reverse=True))
        rules.append((re.compile(rf"(?<![\w./-]){package}\.(?=(?:{alternatives})\b)"), f"lightning_adv.{package}."))
    for old, new in RENAMED_CLASS_PATHS.items():  # dotted class paths only: a bare Python name is left alone
        rules.append((re.compile(rf"(?<![\w./-]){re.escape(old)}(?!\w)"), new))
    return rules


def migrate_text(text: str, rules=None) -> str:
    """``text`` with the old top-level names rewritten (idempotent)."""
    for pattern, replacement in rules or _patterns():
        text = pattern.sub(replacement, text)
    return text


def _files(paths: list[Path]):
    for path in paths:
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                if child.is_file() and child.suffix in SUFFIXES and child.resolve() != Path(__file__).resolve() and not any(
                    part.startswith(".") or part in {"runs", "lightning_logs", "__pycache__"} for part in child.parts
                ):
                    yield child
        elif path.is_file():
            yield path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, help="files or folders to rewrite in place")
    parser.add_argument("--check", action="store_true", help="only list the files that would change; exit 1 if any")
    args = parser.parse_args(argv)
    rules = _patterns()
    changed = []
    for path in _files(args.paths):
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        new = migrate_text(text, rules)
        if new != text:
            changed.append(path)
            if not args.check:
                path.write_text(new)
    for path in changed:
        print(("would rewrite " if args.check else "rewrote ") + str(path))
    return 1 if (args.check and changed) else 0


if __name__ == "__main__":
    sys.exit(main())
