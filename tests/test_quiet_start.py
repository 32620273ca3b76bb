"""A plain quickstart run prints no banner, advertisement or deprecation notice (issue 13), and the
shipped configs are found from any directory."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

from lightning_adv.quiet import AdvertFilter, quiet_start
from lightning_adv.shipped import resolve_config_args, shipped_configs_dir

ROOT = Path(__file__).resolve().parents[1]

#: what must not appear before (or during) a quickstart fit
MARKERS = ("Gym has been unmaintained", "gymnasium", "Tip:", "litmodels", "litlogger", "Lightning Experiments",
           "DeprecationWarning", "FutureWarning", "deprecated", "Deprecated")


def test_quickstart_fit_prints_no_banner_advert_or_deprecation(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}  # as a user runs it
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "train.py", "fit", "--config", "configs/quickstart.yaml",
           "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "2",
           "--trainer.log_every_n_steps", "1", "--trainer.default_root_dir", str(tmp_path)]
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-3000:]
    assert "GPU available" in out  # Lightning's own information stays (the output really is captured)
    assert list(tmp_path.glob("quickstart/version_*/checkpoints/last.ckpt")), out[-2000:]
    found = [m for m in MARKERS if m in out]
    assert not found, f"{found} in:\n{out[:4000]}"


def test_advert_filter_drops_only_the_tips():
    quiet_start()
    quiet_start()  # idempotent
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    assert sum(isinstance(f, AdvertFilter) for f in logger.filters) == 1

    def record(msg: str) -> logging.LogRecord:
        return logger.makeRecord(logger.name, logging.INFO, __file__, 1, msg, None, None)

    assert not logger.filter(record("💡 Tip: For seamless cloud uploads and versioning, try installing litmodels"))
    assert logger.filter(record("GPU available: False, used: False"))
    assert logger.filter(record("`Trainer.fit` stopped: `max_epochs=1` reached."))


def test_shipped_config_is_found_from_another_directory(tmp_path, monkeypatch, capsys):
    folder = shipped_configs_dir()
    assert folder is not None and (folder / "quickstart.yaml").is_file()
    monkeypatch.chdir(tmp_path)
    args = ["fit", "--config", "configs/quickstart.yaml", "--config=quickstart.yaml", "--trainer.max_epochs", "1"]
    out = resolve_config_args(args)
    assert out[2] == str(folder / "quickstart.yaml") and out[3] == f"--config={folder / 'quickstart.yaml'}"
    assert out[4:] == args[4:]
    assert "using the shipped" in capsys.readouterr().err
    # a file of the user's wins; an unknown name is left for the usual "no such file" error
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "quickstart.yaml").write_text("seed_everything: 1\n")
    assert resolve_config_args(["fit", "--config", "configs/quickstart.yaml"])[2] == "configs/quickstart.yaml"
    assert resolve_config_args(["fit", "--config", "configs/nope.yaml"])[2] == "configs/nope.yaml"
