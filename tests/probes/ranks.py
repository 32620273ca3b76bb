"""A callback the DDP test adds to train.py runs: each rank writes what it saw and holds."""
from __future__ import annotations

import json
import os

import torch
from lightning.pytorch.callbacks import Callback


class RankProbe(Callback):
    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir
        self.samples = 0

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.samples += int(batch[1].shape[0])

    def on_fit_end(self, trainer, module):
        params = torch.cat([p.detach().flatten().double().cpu() for p in module.parameters()])
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        record = {
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "global_step": trainer.global_step,
            "train_samples": self.samples,
            "param_sum": float(params.sum()),
            "param_abs_sum": float(params.abs().sum()),
            "metrics": metrics,
            "strategy": type(trainer.strategy).__name__,
        }
        os.makedirs(self.out_dir, exist_ok=True)
        with open(os.path.join(self.out_dir, f"rank{trainer.global_rank}.json"), "w") as f:
            json.dump(record, f)
