"""A callback the few-shot DDP test adds to train.py runs: each rank writes the episodes it drew and its results."""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback


class EpisodeProbe(Callback):
    """Each rank writes the test episodes it drew and its local accuracy sums (run inside train.py)."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir
        self.episodes: list[float] = []
        self.local: dict[str, float] = {}

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.episodes += [float(sx.double().sum()) for sx in batch[0]]

    def on_fit_end(self, trainer, module):
        params = torch.cat([p.detach().flatten().double() for p in module.parameters()])
        record = {"episodes": self.episodes, "param_sum": float(params.sum()), "step": trainer.global_step,
                  "metrics": {k: float(v) for k, v in trainer.callback_metrics.items()}}
        os.makedirs(self.out_dir, exist_ok=True)
        Path(self.out_dir, f"fit{trainer.global_rank}.json").write_text(json.dumps(record))

    def on_test_batch_end(self, trainer, module, outputs, batch, batch_idx, dataloader_idx=0):
        self.episodes += [float(sx.double().sum()) for sx in batch[0]]  # a fingerprint of each support set
        metric = module.metrics["test_acc"]
        self.local = {"n": float(metric.n), "total": float(metric.total)}

    def on_test_end(self, trainer, module):
        record = {"rank": trainer.global_rank, "world_size": trainer.world_size, "episodes": self.episodes,
                  "local": self.local, "results": module.test_results,
                  "metrics": {k: float(v) for k, v in trainer.callback_metrics.items()}}
        os.makedirs(self.out_dir, exist_ok=True)
        Path(self.out_dir, f"rank{trainer.global_rank}.json").write_text(json.dumps(record))
