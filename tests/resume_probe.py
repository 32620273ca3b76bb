"""A callback for tests/test_resume.py: once ``global_step >= step`` (after that step's checkpoint was
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
