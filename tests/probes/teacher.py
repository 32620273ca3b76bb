"""A callback the distillation DDP test adds to train.py runs: each rank writes what it knows of the teacher."""
from __future__ import annotations

import json
from pathlib import Path

from lightning.pytorch.callbacks import Callback


class TeacherProbe(Callback):
    """Each rank writes what it knows of the teacher to <default_root_dir>/teacher/rank<r>.json."""

    def on_train_start(self, trainer, module):
        self.start = self._sums(module.teacher)
        wrapped = trainer.strategy.model  # what DDP wraps, while training
        self.wrapper = type(wrapped).__name__
        self.in_wrapper = bool({id(p) for p in module.teacher.parameters()} & {id(p) for p in wrapped.parameters()})

    @staticmethod
    def _sums(teacher) -> list[float]:
        return [float(t.detach().double().sum()) for t in teacher.state_dict().values() if t.is_floating_point()]

    def on_fit_end(self, trainer, module):
        teacher = module.teacher
        record = {
            "wrapper": self.wrapper,
            "teacher_in_wrapper": self.in_wrapper,
            "teacher_training": teacher.training,
            "teacher_requires_grad": any(p.requires_grad for p in teacher.parameters()),
            "unchanged": self.start == self._sums(teacher),
            "teacher_sum": sum(self.start),
        }
        out = Path(trainer.default_root_dir) / "teacher"
        out.mkdir(parents=True, exist_ok=True)
        (out / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))
