"""Issue 24: a run that collapses onto one class says so (CollapseWarning, added by train.py)."""
from __future__ import annotations

import logging

import torch

from helpers import REPO
from lightning_adv.callbacks import CollapseWarning
from lightning_adv.cli import main

QUICK = str(REPO / "configs" / "quickstart.yaml")
RUN = ["--config", QUICK, "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
       "--trainer.enable_model_summary", "false", "--trainer.limit_train_batches", "4", "--trainer.limit_val_batches", "2",
       "--model.objective.init_args.attack.steps", "1"]


def test_a_collapsing_run_warns_with_one_line_and_can_be_stopped(tmp_path, caplog):
    """Adam at lr 5 on digits: every prediction becomes one class. The line names the epoch, the share and the
    causes; with ``stop`` the run ends at the validation that found it instead of running 4 epochs."""
    torch.set_num_threads(1)
    with caplog.at_level(logging.WARNING, logger="lightning_adv"):
        cli = main(["fit", *RUN, "--model.optim.lr", "5", "--trainer.max_epochs", "4",
                    "--trainer.default_root_dir", str(tmp_path), "--trainer.callbacks+=lightning_adv.callbacks.CollapseWarning",
                    "--trainer.callbacks.stop", "true"])
    found = [c for c in cli.trainer.callbacks if isinstance(c, CollapseWarning)]
    assert len(found) == 1 and found[0].stop  # the user's; train.py adds no second one
    lines = [r.getMessage() for r in caplog.records if "collapse warning" in r.getMessage()]
    assert lines == found[0].lines and len(lines) == 1, lines
    line = lines[0]
    assert line.startswith("collapse warning: epoch 1: 100% of the validation predictions are class ")
    assert "\n" not in line and all(w in line for w in ("learning rate", "temperature", "too small", "stopping"))
    assert cli.trainer.current_epoch == 2 and cli.trainer.global_step == 8  # stopped after epoch 1, not 4 epochs


def test_a_training_run_does_not_warn(tmp_path):
    torch.set_num_threads(1)
    cli = main(["fit", *RUN, "--trainer.max_epochs", "2", "--trainer.default_root_dir", str(tmp_path),
                "--trainer.limit_train_batches", "10"])
    found = [c for c in cli.trainer.callbacks if isinstance(c, CollapseWarning)]
    assert len(found) == 1 and found[0].lines == []  # on by default, silent on a run that learns
