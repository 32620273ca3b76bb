"""Issue 24: the last silent inputs (integers through the CLI, radii beyond the image box), one-line
errors of the Python API, unknown class paths with the names that exist."""
from __future__ import annotations

import pytest

from helpers import REPO
from lightning_adv.cli import main

QUICK = str(REPO / "configs" / "quickstart.yaml")
LIMITS = ("limit_train_batches", "limit_val_batches", "limit_test_batches", "limit_predict_batches")


@pytest.mark.parametrize("key", LIMITS)
def test_limit_batches_1_on_the_command_line_means_one_batch(key, tmp_path):
    """Lightning reads the float 1.0 as 100% of the split and the int 1 as one batch."""
    cli = main(["--config", QUICK, "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path),
                f"--trainer.{key}", "1"], run=False)
    value = getattr(cli.trainer, key)
    assert value == 1 and isinstance(value, int), repr(value)
    cli = main(["--config", QUICK, "--trainer.logger", "false", f"--trainer.{key}", "1.0"], run=False)
    assert isinstance(getattr(cli.trainer, key), float)  # 1.0 still means the whole split


def test_limit_batches_1_in_a_yaml_config_means_one_batch(tmp_path):
    cfg = tmp_path / "one.yaml"
    cfg.write_text("trainer:\n  limit_val_batches: 1\n  limit_train_batches: 0.5\n")
    cli = main(["--config", QUICK, "--config", str(cfg), "--trainer.logger", "false"], run=False)
    assert cli.trainer.limit_val_batches == 1 and isinstance(cli.trainer.limit_val_batches, int)
    assert cli.trainer.limit_train_batches == 0.5


@pytest.mark.parametrize("flag", ["--model.optim.milestones", "--model.init_args.optim.milestones"])
def test_optional_optim_field_takes_null(flag):
    cli = main(["--config", QUICK, "--trainer.logger", "false", "--model.optim.milestones", "[3]", "--model.optim.lr",
                "0.01", flag, "null"], run=False)
    optim = cli.model.hparams.optim
    assert optim["milestones"] is None and optim["lr"] == 0.01


def test_a_folder_name_with_a_dot_is_not_taken_for_a_class_path(tmp_path, monkeypatch):
    """``--trainer.default_root_dir runs.exp1`` beside a ``runs/`` folder: ``runs`` imports as a namespace
    package, which is a folder, not a package of classes; only importable packages are checked."""
    import sys

    from lightning_adv.cli_errors import ConfigError, check_class_path

    (tmp_path / "runs").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    check_class_path("trainer.default_root_dir", "runs.exp1")
    sys.modules.pop("runs", None)
    with pytest.raises(ConfigError, match="lightning_adv.objectives has no 'PGDX'"):
        check_class_path("model.objective", "lightning_adv.objectives.PGDX")
