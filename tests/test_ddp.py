"""A real 2-process DDP fit on CPU (gloo), through train.py as a user runs it."""
from __future__ import annotations

import pytest
import torch

from helpers import check_ddp_run, run_ddp

pytestmark = pytest.mark.ddp


def test_ddp_fit_pgd_training(tmp_path):
    records = run_ddp(tmp_path)
    check_ddp_run(records, tmp_path)
    assert records[0]["global_step"] == 10  # ceil(606 / 64) batches per rank, one step each


def test_ddp_fit_free_training(tmp_path):
    free = tmp_path / "free.yaml"  # free training uses only the ball: drop the quickstart's PGD-5 settings
    free.write_text("model:\n  init_args:\n    objective:\n      class_path: lightning_adv.objectives.Free\n"
                    "      init_args: {eps: 0.15, replays: 2}\n")
    records = run_ddp(tmp_path, "--config", str(free))
    ckpt = check_ddp_run(records, tmp_path)
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
    records = run_ddp(
        tmp_path, "--data.data_dir", str(tmp_path / "data"), "--data.batch_size", "4", "--data.eval_batch_size", "4",
        "--data.val_size", "8", "--data.num_workers", "0",
        "--trainer.limit_val_batches", "1", "--model.objective.init_args.attack.steps", "2",
        config="configs/at_resnet18_cifar10.yaml")
    check_ddp_run(records, tmp_path, n_train=32, batch=4)
    assert records[0]["global_step"] == 4  # 32 images / 2 ranks / batch 4
