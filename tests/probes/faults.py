"""Callbacks for subprocess tests. PauseAt (tests/test_resume.py): once ``global_step >= step`` (after that step's checkpoint was
written), write ``flag`` and sleep, so the test can ``kill -9`` the process at a known point."""
from __future__ import annotations

import time
from pathlib import Path

import lightning.pytorch as pl


class PauseAt(pl.Callback):
    def __init__(self, step: int = 3, flag: str = "paused") -> None:
        self.step, self.flag = step, flag

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
        if trainer.global_step >= self.step:
            Path(self.flag).write_text(str(trainer.global_step))
            time.sleep(600)


class FailOnRank(pl.Callback):
    """Raise a ValueError on rank ``rank`` at the start of step ``step`` (tests/test_ddp_failure.py)."""

    def __init__(self, rank: int = 1, step: int = 2) -> None:
        self.rank, self.step = rank, step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
        if trainer.global_rank == self.rank and trainer.global_step == self.step:
            raise ValueError(f"probe: rank {self.rank} fails at step {self.step}")
