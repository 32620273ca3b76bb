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

from helpers import check_ddp_run, run_ddp

pytestmark = pytest.mark.ddp


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
    records = run_ddp(tmp_path, "--trainer.callbacks+=probes.teacher.TeacherProbe", config=str(cfg))
    ckpt = check_ddp_run(records, tmp_path)
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
