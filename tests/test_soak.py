"""Soak (slow, bounded): 300 PGD adversarial training steps with a checkpoint every 20 steps keep the
resident memory flat, and every checkpoint loads (weights_only) with finite weights."""
from __future__ import annotations

import os

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from helpers import REPO
from lightning_adv.cli import main

pytestmark = pytest.mark.slow


def _rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class _RSS(Callback):
    def __init__(self):
        self.samples: dict[int, float] = {}

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.samples[trainer.global_step] = _rss_mb()


def test_soak_300_steps_memory_flat_and_checkpoints_load(tmp_path):
    torch.set_num_threads(1)
    cli = main(["--config", str(REPO / "configs" / "quickstart.yaml"), "--trainer.logger", "false",
                "--trainer.default_root_dir", str(tmp_path), "--trainer.enable_progress_bar", "false",
                "--trainer.accelerator", "cpu", "--trainer.max_steps", "300", "--trainer.max_epochs", "-1",
                "--trainer.limit_val_batches", "0", "--trainer.enable_model_summary", "false",
                "--checkpoint.monitor", "null", "--checkpoint.save_top_k", "-1", "--checkpoint.every_n_train_steps", "20",
                "--checkpoint.filename", "step{step:03d}", "--model.objective.init_args.attack.steps", "3"], run=False)
    rss = _RSS()
    cli.trainer.callbacks.append(rss)
    cli.trainer.fit(cli.model, cli.datamodule)
    assert cli.trainer.global_step == 300
    early = sorted(rss.samples[s] for s in range(60, 101))[20]  # medians after warm-up and at the end
    late = sorted(rss.samples[s] for s in range(260, 301))[20]
    print(f"soak: RSS median steps 60-100 {early:.1f} MiB, steps 260-300 {late:.1f} MiB, growth {late - early:+.1f} MiB")
    assert late - early < 25.0, (early, late)
    ckpts = sorted((tmp_path / "checkpoints").glob("step*.ckpt"))
    assert len(ckpts) == 15
    for path in ckpts:
        ck = torch.load(path, map_location="cpu", weights_only=True)
        assert ck["global_step"] == int(path.stem[4:7])
        assert all(bool(v.isfinite().all()) for v in ck["state_dict"].values() if v.is_floating_point())
