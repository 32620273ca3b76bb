"""A callback the chapter-6 DDP test adds: each rank writes the Hessian statistics it computed."""
from __future__ import annotations

import json
import os

from lightning.pytorch.callbacks import Callback


class HessianProbe(Callback):
    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir

    def on_fit_end(self, trainer, module):
        from lightning_adv.callbacks import HessianEigenvalues, NTKSnapshot

        hess = next(c for c in trainer.callbacks if isinstance(c, HessianEigenvalues))
        ntk = next(c for c in trainer.callbacks if isinstance(c, NTKSnapshot))
        record = {"rank": trainer.global_rank, "world_size": trainer.world_size, "hessian": hess.history,
                  "shard": len(hess._shard[1]), "ntk_snapshots": len(ntk.history)}
        os.makedirs(self.out_dir, exist_ok=True)
        with open(os.path.join(self.out_dir, f"rank{trainer.global_rank}.json"), "w") as f:
            json.dump(record, f)
