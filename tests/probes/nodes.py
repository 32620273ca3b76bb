"""A callback the multi-node test adds to train.py runs: each process writes which rank, node and
examples it had, and how many examples the evaluator's gathered records cover."""
from __future__ import annotations

import hashlib
import json
import os

import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DistributedSampler


def fingerprint(x: torch.Tensor, y: torch.Tensor) -> str:
    """One training example as a short string (its pixels and label)."""
    return hashlib.sha1(x.detach().cpu().float().numpy().tobytes()).hexdigest()[:16] + f":{int(y)}"


class NodeProbe(Callback):
    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir
        self.train_seen = 0
        self.fingerprints: list[list[str]] = []  # per epoch

    def on_train_epoch_start(self, trainer, module):
        loader = trainer.train_dataloader
        sampler = getattr(getattr(loader, "batch_sampler", None), "sampler", None)
        self.sampler_type = type(sampler).__name__
        self.distributed = isinstance(sampler, DistributedSampler)
        self.fingerprints.append([])

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.train_seen += int(batch[1].shape[0])
        self.fingerprints[-1] += [fingerprint(x, y) for x, y in zip(batch[0], batch[1])]

    def _write(self, trainer, stage: str) -> None:
        evaluator = next(cb for cb in trainer.callbacks if hasattr(cb, "reports"))
        report = evaluator.reports.get("val" if stage == "fit" else "test")
        env = trainer._accelerator_connector.cluster_environment
        record = {
            "global_rank": trainer.global_rank,
            "local_rank": trainer.local_rank,
            "node_rank": trainer.node_rank,
            "world_size": trainer.world_size,
            "num_nodes": trainer.num_nodes,
            "environment": type(env).__name__,
            "env": {k: os.environ.get(k) for k in ("RANK", "LOCAL_RANK", "GROUP_RANK", "WORLD_SIZE")},
            "train_seen": self.train_seen,
            "sampler": getattr(self, "sampler_type", None),
            "distributed_sampler": getattr(self, "distributed", None),
            "fingerprints": self.fingerprints,
            "evaluated": None if report is None else report.n,
            "metrics": {k: float(v) for k, v in trainer.callback_metrics.items()},
            "global_step": trainer.global_step,
        }
        os.makedirs(self.out_dir, exist_ok=True)
        with open(os.path.join(self.out_dir, f"{stage}_rank{trainer.global_rank}.json"), "w") as f:
            json.dump(record, f)

    def on_fit_end(self, trainer, module):
        self._write(trainer, "fit")

    def on_test_end(self, trainer, module):
        self._write(trainer, "test")
