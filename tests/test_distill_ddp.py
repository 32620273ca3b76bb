"""ARD and Fast-ARD in a real 2-process DDP fit on CPU (gloo), through train.py.

The teacher is loaded on every rank from ``--model.teacher_checkpoint``; it must stay
outside DDP (not wrapped, not synchronised), frozen and in eval mode, while the students
of both ranks end equal.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from test_ddp import _check_common, _run_ddp

pytestmark = pytest.mark.ddp


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


def _write_config(tmp_path: Path, class_path: str, extra: str = "") -> Path:
    torch.manual_seed(3)
    from lightning_adv.models import create_model

    teacher = create_model("small_cnn", num_classes=10, in_channels=1, width=8)
    torch.save(teacher.state_dict(), tmp_path / "teacher.pt")
    cfg = tmp_path / "distill.yaml"
    cfg.write_text(
        "seed_everything: 0\n"
        "model:\n"
        "  class_path: lightning_adv.modules.KnowledgeDistillation\n"
        "  init_args:\n"
        "    arch: small_cnn\n    num_classes: 10\n    in_channels: 1\n"
        "    teacher_arch: small_cnn\n    teacher_arch_kwargs: {width: 8}\n"
        f"    teacher_checkpoint: {tmp_path / 'teacher.pt'}\n"
        "    optim: {optimizer: adam, lr: 0.003, weight_decay: 0.0, scheduler: constant}\n"
        "    objective:\n"
        f"      class_path: {class_path}\n"
        "      init_args:\n"
        "        temperature: 10.0\n"
        + ("        eps: 0.15\n" if "FastARD" in class_path else
           "        attack: {eps: 0.15, steps: 2, step_size: 0.075, bn_mode: train}\n" if "ARD" in class_path else "")
        + f"{extra}"
        "data:\n  class_path: lightning_adv.datamodules.DigitsDataModule\n  init_args: {batch_size: 64}\n"
    )
    return cfg


def _teacher_records(tmp_path: Path) -> list[dict]:
    records = [json.loads((tmp_path / "teacher" / f"rank{r}.json").read_text()) for r in range(2)]
    for rec in records:
        assert rec["wrapper"] == "DistributedDataParallel"
        assert not rec["teacher_in_wrapper"]  # not wrapped, so never synchronised by DDP
        assert not rec["teacher_training"] and not rec["teacher_requires_grad"]
        assert rec["unchanged"]
    assert records[0]["teacher_sum"] == pytest.approx(records[1]["teacher_sum"])  # the same teacher on both
    return records


def _fit(tmp_path: Path, class_path: str, extra: str = "") -> tuple[list[dict], dict]:
    cfg = _write_config(tmp_path, class_path, extra)
    records = _run_ddp(tmp_path, "--trainer.callbacks+=test_distill_ddp.TeacherProbe", config=str(cfg))
    ckpt = _check_common(records, tmp_path)
    _teacher_records(tmp_path)
    assert not any("teacher" in k for k in ckpt["state_dict"])
    assert ckpt["hyper_parameters"]["teacher_checkpoint"] == str(tmp_path / "teacher.pt")
    return records, ckpt


def test_ddp_fit_ard(tmp_path):
    records, _ = _fit(tmp_path, "lightning_adv.objectives.ARD")
    assert records[0]["global_step"] == records[1]["global_step"] == 10  # ceil(606 / 64) batches per rank
    assert "train/adv_acc" in records[0]["metrics"]


@pytest.mark.parametrize("perturbation_loss", ["ard", "ce"])
def test_ddp_fit_fast_ard(perturbation_loss, tmp_path):
    records, ckpt = _fit(tmp_path, "lightning_adv.objectives.FastARD",
                         f"        replays: 2\n        perturbation_loss: {perturbation_loss}\n")
    assert records[0]["global_step"] == records[1]["global_step"] == 20  # m = 2 updates per batch
    delta = ckpt["free_delta"]
    assert delta.shape[0] == 2 and not torch.equal(delta[0], delta[1])  # one perturbation per rank
    assert 0 < delta.abs().max() <= 0.15 + 1e-6
