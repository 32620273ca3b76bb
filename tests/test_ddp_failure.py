"""A 2-process DDP run (gloo, CPU) where one rank fails ends on every rank with that rank's error, in
bounded time (the run has a timeout: a hang fails the test)."""
from __future__ import annotations

import pytest

from helpers import fork_train_py

pytestmark = pytest.mark.ddp


def test_one_rank_fails_all_ranks_report_it(tmp_path):
    proc = fork_train_py("fit", "--config", "configs/quickstart.yaml", "--trainer.accelerator", "cpu",
                         "--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.max_epochs", "1",
                         "--trainer.limit_val_batches", "1", "--trainer.logger", "false",
                         "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path),
                         "--trainer.callbacks+=probes.faults.FailOnRank", "--trainer.callbacks.rank", "1",
                         "--trainer.callbacks.step", "2", expect=None, timeout=300)
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    # rank 0 (this process) and rank 1 (its child, same stderr) both end with rank 1's error
    assert len(lines) >= 2, proc.stderr[-4000:]
    assert all("rank 1 fails at step 2" in ln for ln in lines), lines
    assert any("this rank 0 stopped" in ln for ln in lines), lines
