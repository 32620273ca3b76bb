"""A real 2-process DDP fit on CPU (gloo), through train.py as a user runs it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO

pytestmark = pytest.mark.ddp


def _run_ddp(tmp_path: Path, *extra: str, config: str = "configs/quickstart.yaml") -> list[dict]:
    probe_cfg = tmp_path / "probe.yaml"
    probe_cfg.write_text(
        "trainer:\n  callbacks:\n"
        "    - class_path: lightning_adv.callbacks.PGDEvaluation\n"
        "      init_args: {attacks: [{eps: 0.1, steps: 5, step_size: 0.03}], num_images: 0}\n"
        "    - class_path: ddp_probe.RankProbe\n"
        f"      init_args: {{out_dir: {tmp_path / 'probe'}}}\n"
    )
    cmd = [sys.executable, "train.py", "fit", "--config", config, "--config", str(probe_cfg),
           "--trainer.accelerator", "cpu", "--trainer.strategy", "ddp", "--trainer.devices", "2",
           "--trainer.max_epochs", "1", "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
           "--trainer.default_root_dir", str(tmp_path), *extra]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "tests"), str(REPO)]), OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    records = [json.loads((tmp_path / "probe" / f"rank{r}.json").read_text()) for r in range(2)]
    return records


def _check_common(records: list[dict], tmp_path: Path, n_train: int = 1212, batch: int = 64) -> dict:
    r0, r1 = records
    assert r0["world_size"] == r1["world_size"] == 2
    assert r0["strategy"] == "DDPStrategy"
    # gradients were all-reduced: both ranks end with the same weights
    assert r0["param_sum"] == pytest.approx(r1["param_sum"], rel=1e-6, abs=1e-6)
    assert r0["param_abs_sum"] == pytest.approx(r1["param_abs_sum"], rel=1e-6)
    # the sampler was distributed: each rank saw about half of the training images
    assert r0["train_samples"] + r1["train_samples"] in range(n_train, n_train + 2 * batch)
    assert abs(r0["train_samples"] - r1["train_samples"]) <= batch
    # metrics reduced across ranks: the robust accuracy both ranks log is the same number
    for key in ("val/robust_acc", "val/acc"):
        assert key in r0["metrics"]
        assert r0["metrics"][key] == pytest.approx(r1["metrics"][key], abs=1e-6)
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == r0["global_step"]
    return ckpt


def test_ddp_fit_pgd_training(tmp_path):
    records = _run_ddp(tmp_path)
    _check_common(records, tmp_path)
    assert records[0]["global_step"] == 10  # ceil(606 / 64) batches per rank, one step each


def test_ddp_fit_free_training(tmp_path):
    free = tmp_path / "free.yaml"  # free training uses only the ball: drop the quickstart's PGD-5 settings
    free.write_text("model:\n  init_args:\n    objective:\n      class_path: lightning_adv.objectives.Free\n"
                    "      init_args: {eps: 0.15, replays: 2}\n")
    records = _run_ddp(tmp_path, "--config", str(free))
    ckpt = _check_common(records, tmp_path)
    assert records[0]["global_step"] == 20  # m = 2 optimiser steps per batch
    delta = ckpt["free_delta"]
    assert delta.shape[0] == 2  # the perturbation of each rank is kept for resuming
    assert not torch.equal(delta[0], delta[1])  # ranks attacked different shards
    assert delta.abs().max() <= 0.15 + 1e-6  # quickstart eps


def test_ddp_batchnorm_model_with_train_mode_attack(tmp_path):
    """ResNet-18 (BatchNorm, attacked in train mode as in the thesis) on CIFAR-10 stand-ins.

    ``--trainer.sync_batchnorm true`` needs GPUs (torch: "SyncBatchNorm layers only work
    with GPU modules"); on CPU this checks the BatchNorm model and its buffers under DDP."""
    from lightning_adv.datamodules import write_cifar_standin

    write_cifar_standin(tmp_path / "data", dataset="cifar10", n_train=40, n_test=8)
    records = _run_ddp(
        tmp_path, "--data.data_dir", str(tmp_path / "data"), "--data.batch_size", "4", "--data.eval_batch_size", "4",
        "--data.val_size", "8", "--data.num_workers", "0",
        "--trainer.limit_val_batches", "1", "--model.objective.init_args.attack.steps", "2",
        config="configs/at_resnet18_cifar10.yaml")
    _check_common(records, tmp_path, n_train=32, batch=4)
    assert records[0]["global_step"] == 4  # 32 images / 2 ranks / batch 4
