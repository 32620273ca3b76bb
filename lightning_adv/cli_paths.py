"""Checks of the command line's config files, class paths and checkpoints before LightningCLI parses them:
a missing or malformed ``--config`` file, a class path that does not import, a renamed class path
(:data:`RENAMED_CLASS_PATHS`, with the fix), a checkpoint that needs ``scripts/convert_checkpoint.py``."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from .cli_errors import ConfigError, check_class_path

__all__ = ["LEGACY_CHECKED", "RENAMED_CLASS_PATHS", "check_config_files", "check_legacy_checkpoint"]

#: modules whose pre-objectives checkpoints need scripts/convert_checkpoint.py
LEGACY_CHECKED = ("AdvTraining", "KnowledgeDistillation", "ARD", "FastARD", "AdversarialQuerying")


#: renamed classes, old class path -> new (besides the first version's top-level ``datamodules.X`` /
#: ``callbacks.X``, now ``lightning_adv.datamodules.X`` / ``lightning_adv.callbacks.X``)
RENAMED_CLASS_PATHS = {  # built, not written out: the migration script would rewrite a literal old path
    f"{module}.{old}": f"{module}.{new}" for module in ("lightning_adv.attacks", "lightning_adv.attacks.whitebox")
    for old, new in (("PGDAttack", "PGD"), ("FGSMAttack", "FGSM"))
}
_OLD_CLASS_PATH = re.compile(r"(?<![\w./-])((?:" + "|".join(map(re.escape, RENAMED_CLASS_PATHS)) +
                             r")(?!\w)|(?:datamodules|callbacks)\.[A-Za-z_][\w.]*)")


def _check_old_class_path(where: str, text: str) -> None:
    """A renamed class path (:data:`RENAMED_CLASS_PATHS`, the first version's top-level ``datamodules.X`` /
    ``callbacks.X``), named with the fix."""
    for line in text.splitlines():
        if "class_path" not in line and not where.startswith("--"):
            continue
        found = _OLD_CLASS_PATH.search(line.split("#")[0])
        if found:
            old = found.group(1)
            new = RENAMED_CLASS_PATHS.get(old, f"lightning_adv.{old}")
            raise ConfigError(f"{where}: class path {old!r} is now {new!r}; write that "
                              "(python scripts/migrate_class_paths.py <file> rewrites a config)")


def check_config_files(args: list[str]) -> None:
    """Each ``--config`` file exists and is valid YAML (jsonargparse's message names neither), and no
    file or argument uses a class path of the first version's top-level packages."""
    import yaml

    for flag, value in zip([""] + args, args):
        if value.startswith("--") and "=" in value:
            _check_old_class_path(*value.split("=", 1))
            _check_class_paths(*value.split("=", 1))
        elif flag.startswith("--") and "=" not in flag and flag != "--config":
            _check_old_class_path(flag, value)
            _check_class_paths(flag, value)
        if flag not in ("--config", "-c"):
            continue
        path = Path(value)
        if not path.is_file():
            raise ConfigError(f"--config {value}: no such file; give the path of a YAML config (see configs/)")
        text = path.read_text()
        try:
            tree = yaml.safe_load(text)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise ConfigError(f"--config {value}: YAML syntax error{where}: {problem}; fix the file") from None
        _check_old_class_path(f"--config {value}", text)
        for key, class_path in _class_path_values(tree):
            check_class_path(f"--config {value}: {key}", class_path)


def _class_path_values(tree: Any, key: str = "") -> list[tuple[str, str]]:
    """(dotted key, value) of every ``class_path`` in a loaded YAML tree."""
    if isinstance(tree, dict):
        found = [(f"{key}.class_path".lstrip("."), tree["class_path"])] if isinstance(tree.get("class_path"), str) else []
        return found + [kv for k, v in tree.items() for kv in _class_path_values(v, f"{key}.{k}".lstrip("."))]
    if isinstance(tree, list):
        return [kv for i, v in enumerate(tree) for kv in _class_path_values(v, f"{key}[{i}]")]
    return []


def _check_class_paths(flag: str, value: str) -> None:
    """A class path given on the command line (``--model.objective X``, ``--trainer.logger X``, ``--x.class_path
    X`` or a ``{class_path: X}`` mapping) imports, else one line with the names that exist."""
    import yaml

    where = flag.lstrip("-").removesuffix("+").removesuffix(".class_path")
    if value.lstrip().startswith("{"):
        try:
            tree = yaml.safe_load(value)
        except yaml.YAMLError:
            return
        for key, class_path in _class_path_values(tree):
            check_class_path(f"{where}.{key}", class_path)
    else:
        check_class_path(where, value)


def check_legacy_checkpoint(path: str) -> None:
    """A checkpoint written before objectives were parts or naming a renamed class: say how to convert it."""
    if not Path(path).is_file():
        return
    try:
        ckpt = torch.load(path, weights_only=True, map_location="cpu")
    except Exception:  # not a checkpoint at all: check_checkpoint names the problem
        return
    hparams = (ckpt.get("hyper_parameters") or {}) if isinstance(ckpt, dict) else {}
    for key, class_path in _class_path_values(hparams):
        _check_old_class_path(f"ckpt_path={path}: hyper_parameters.{key}", f"class_path: {class_path}")
    cls = str(hparams.get("_class_path", "module")).rsplit(".", 1)[-1]
    if cls in LEGACY_CHECKED:
        from lightning_adv.modules.objective_training import legacy_checkpoint_error

        msg = legacy_checkpoint_error(hparams, cls)
        if msg:
            raise ValueError(f"ckpt_path={path}: {msg}")
