"""The datamodules and callbacks are imported as ``lightning_adv.datamodules`` / ``lightning_adv.callbacks``;
the first version's top-level names are migrated by a script and refused with the fix named."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("migrate_class_paths", ROOT / "scripts" / "migrate_class_paths.py")
migrate = importlib.util.module_from_spec(spec)
spec.loader.exec_module(migrate)

OLD = """\
from callbacks import PGDEvaluation
from datamodules.fewshot import OmniglotFewShot
import datamodules
data:
  class_path: datamodules.CIFAR10DataModule
trainer:
  callbacks:
    - class_path: callbacks.PGDEvaluation
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
x = trainer.callbacks.append(1); callbacks.append(2); my_callbacks.PGDEvaluation
"""


def test_migration_rewrites_only_the_two_packages_names_and_is_idempotent():
    new = migrate.migrate_text(OLD)
    assert "from lightning_adv.callbacks import PGDEvaluation" in new
    assert "from lightning_adv.datamodules.fewshot import OmniglotFewShot" in new
    assert "from lightning_adv import datamodules" in new
    assert "class_path: lightning_adv.datamodules.CIFAR10DataModule" in new
    assert "class_path: lightning_adv.callbacks.PGDEvaluation" in new
    # other projects' and local names stay
    assert "lightning.pytorch.callbacks.ModelCheckpoint" in new
    assert "trainer.callbacks.append(1); callbacks.append(2); my_callbacks.PGDEvaluation" in new
    assert migrate.migrate_text(new) == new


def test_the_checkout_has_nothing_left_to_migrate():
    """A config, test or doc with an old name (e.g. from a branch written before the move) fails here."""
    folders = [ROOT / name for name in ("configs", "docs", "tests", "scripts", "benchmarks", "lightning_adv",
                                        "datamodules", "callbacks")] + [ROOT / "README.md", ROOT / "train.py"]
    this = Path(__file__).resolve()
    left = [str(p.relative_to(ROOT)) for p in migrate._files([f for f in folders if f.exists()])
            if p.resolve() != this and migrate.migrate_text(p.read_text()) != p.read_text()]
    assert left == []


def test_new_names_resolve_to_the_checkout_folders():
    import lightning_adv.callbacks as callbacks_pkg
    import lightning_adv.datamodules as datamodules_pkg

    assert Path(datamodules_pkg.__file__).parent.name == "datamodules"
    assert Path(callbacks_pkg.__file__).parent.name == "callbacks"
    assert datamodules_pkg.DigitsDataModule.__module__ == "lightning_adv.datamodules.digits"


@pytest.mark.parametrize("args", [
    ["--config", "{old}"],
    ["--trainer.callbacks+=callbacks.PGDEvaluation"],
    ["--data", "datamodules.DigitsDataModule"],
])
def test_old_class_paths_are_refused_naming_the_new_one(tmp_path, args):
    from lightning_adv.cli_errors import ConfigError
    from lightning_adv.cli_paths import check_config_files

    old = tmp_path / "old.yaml"
    old.write_text("data:\n  class_path: datamodules.DigitsDataModule\n")
    with pytest.raises(ConfigError, match=r"is now 'lightning_adv\.(datamodules|callbacks)\..*migrate_class_paths"):
        check_config_files(["fit", "--config", str(ROOT / "configs" / "quickstart.yaml"),
                             *[a.format(old=old) for a in args]])


@pytest.mark.parametrize("old,new", [("lightning_adv.attacks.PGDAttack", "lightning_adv.attacks.PGD"),
                                     ("lightning_adv.attacks.whitebox.FGSMAttack", "lightning_adv.attacks.whitebox.FGSM")])
def test_renamed_attack_classes_are_refused_and_migrated(tmp_path, old, new):
    """The aliases ``PGDAttack`` / ``FGSMAttack`` are gone: a config, an argument or a checkpoint that names one gets
    the one line with today's name, and the migration script rewrites it."""
    from lightning_adv.cli_errors import ConfigError
    from lightning_adv.cli_paths import check_config_files, check_legacy_checkpoint

    text = f"trainer:\n  callbacks:\n    - class_path: lightning_adv.callbacks.AttackSuiteEvaluation\n      init_args:\n" \
           f"        attacks:\n          - {{class_path: {old}, init_args: {{eps: 0.1}}}}\n"
    config = tmp_path / "old.yaml"
    config.write_text(text)
    expected = rf"class path '{old}' is now '{new}'; write that .*migrate_class_paths"
    with pytest.raises(ConfigError, match=rf"^--config {config}: {expected}"):
        check_config_files(["test", "--config", str(ROOT / "configs" / "quickstart.yaml"), "--config", str(config)])
    with pytest.raises(ConfigError, match=rf"^--model.objective.init_args.attack: {expected}"):
        check_config_files(["fit", "--model.objective.init_args.attack", old])
    ckpt = tmp_path / "old.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {
        "_class_path": "lightning_adv.modules.AdvTraining",
        "objective": {"class_path": "lightning_adv.objectives.PGDAT", "init_args": {"attack": {
            "class_path": old, "init_args": {"eps": 0.1}}}}}}, ckpt)
    with pytest.raises(ConfigError, match=rf"^ckpt_path={ckpt}: hyper_parameters.objective.init_args.attack.class_path: "
                                          rf"{expected}"):
        check_legacy_checkpoint(str(ckpt))
    assert migrate.migrate_text(text) == text.replace(old, new)
    assert migrate.migrate_text(f"{old}X x.{old}") == f"{old}X x.{old}"  # other names stay


def test_train_py_prints_the_refusal_as_one_line(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "fit", "--config",
                           str(ROOT / "configs" / "quickstart.yaml"), "--data", "datamodules.DigitsDataModule"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: --data: ") and "is now 'lightning_adv.datamodules.DigitsDataModule'" in last
