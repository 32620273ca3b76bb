"""Exact resume, non-finite guards and DDP error reports: the callbacks ``train.py`` adds to every run.

:class:`ResumeState` stores the random number generator states of every rank (torch CPU,
CUDA, numpy, python) in each checkpoint and puts them back when a run resumes, at the point
where the interrupted run would have continued: the first ``on_train_epoch_start``,
``on_validation_start`` (not the sanity check, which Lightning runs under ``isolate_rng``)
or ``on_train_batch_start`` after the checkpoint was loaded. Together with the data loader's
position (``torchdata``'s ``StatefulDataLoader``, used by the project's datamodules, whose
state Lightning saves with the fit loop), the optimiser, the schedulers, the counters and the
free-training perturbation, a run killed at any step and resumed from ``last.ckpt`` ends
bit-identical to an uninterrupted run on CPU (``tests/test_resume.py`` kills a subprocess).
The states are tensors, so checkpoints still load with ``weights_only=True``.

:class:`FiniteGuard` stops a run whose training loss or weights became NaN/inf, naming the
step, before any checkpoint callback of that step runs (checkpoint callbacks run last), so
the last good ``last.ckpt`` is not overwritten.
"""
from __future__ import annotations

import math
import random
from typing import Any, Optional

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from lightning_adv.errors import NonFiniteTrainingError, error_line

__all__ = ["FiniteGuard", "RankErrorReport", "ResumeState", "apply_rng_state", "at_epoch_end", "collect_rng_state",
           "peer_error", "this_rank"]


def collect_rng_state() -> dict[str, torch.Tensor]:
    """This process's generator states as plain tensors (loadable with ``weights_only=True``)."""
    _, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    version, py_state, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state().to(torch.int64),
        "numpy_keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        "numpy_meta": torch.tensor([float(pos), float(has_gauss), float(gauss)], dtype=torch.float64),
        "python": torch.tensor([version, *py_state], dtype=torch.int64),
        "python_gauss": torch.tensor([0.0 if py_gauss is None else 1.0, py_gauss or 0.0], dtype=torch.float64),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state().to(torch.int64)
    return state


def apply_rng_state(state: dict[str, torch.Tensor]) -> None:
    """Set this process's generators from :func:`collect_rng_state`'s tensors."""
    torch.set_rng_state(state["torch"].to(torch.uint8).cpu())
    meta = state["numpy_meta"].tolist()
    np.random.set_state(("MT19937", state["numpy_keys"].cpu().numpy().astype(np.uint32), int(meta[0]),
                         int(meta[1]), float(meta[2])))
    py = [int(v) for v in state["python"].tolist()]
    flag, gauss = state["python_gauss"].tolist()
    random.setstate((py[0], tuple(py[1:]), gauss if flag else None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"].to(torch.uint8).cpu())


def at_epoch_end(trainer: pl.Trainer) -> bool:
    """This epoch's training pass is complete (its last batch ran; its validation may follow)."""
    progress = trainer.fit_loop.epoch_loop.batch_progress
    return progress.is_last_batch or progress.current.ready >= trainer.num_training_batches


class ResumeState(Callback):
    """RNG states of every rank in each checkpoint, restored where the run left off."""

    def __init__(self) -> None:
        self._trainer: Optional[pl.Trainer] = None
        self._pending: Optional[dict[str, torch.Tensor]] = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        state = collect_rng_state()
        trainer = self._trainer
        if trainer is not None and trainer.world_size > 1:  # every rank calls this while saving
            # on the strategy's device: NCCL gathers CUDA tensors only (gloo takes either)
            device = trainer.strategy.root_device
            state = {k: trainer.strategy.all_gather(v.to(device)).cpu() for k, v in state.items() if k != "cuda"}
        else:
            state = {k: v.unsqueeze(0) for k, v in state.items()}
        return {"rng": state, "world_size": int(next(iter(state.values())).shape[0])}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        rng = state_dict.get("rng")
        if not rng:
            return
        rank = self._trainer.global_rank if self._trainer is not None else 0
        if rank >= int(state_dict.get("world_size", 1)):
            return  # saved with fewer ranks: this rank keeps its seeded state
        self._pending = {k: v[rank] for k, v in rng.items()}

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        """At an epoch boundary, drop the training loader's position from the checkpoint.

        A ``StatefulDataLoader`` restored at the end of its pass does not start a new epoch: it
        serves nothing (a full epoch: the resumed run silently skipped an epoch) or the rest of the
        old pass (``limit_train_batches``); torchdata issue #1437. Without the position the next
        epoch starts a fresh pass, whose order the sampler derives from (seed, epoch)
        (:class:`lightning_adv.datamodules.sampling.EpochShuffleSampler`, ``DistributedSampler``).
        """
        if at_epoch_end(trainer):
            checkpoint.get("loops", {}).get("fit_loop", {}).get("state_dict", {}).pop("combined_loader", None)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._apply(trainer)

    def _apply(self, trainer: pl.Trainer) -> None:
        if self._pending is not None and not trainer.sanity_checking:
            apply_rng_state(self._pending)
            self._pending = None

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._apply(trainer)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._apply(trainer)


class FiniteGuard(Callback):
    """Raise :class:`NonFiniteTrainingError` naming the step once the loss or a weight is NaN/inf.

    Args:
        check_weights: also check every parameter after each step (one reduction per
            parameter; ``lr 1e12`` can blow the weights up before the loss shows it).
    """

    def __init__(self, check_weights: bool = True) -> None:
        self.check_weights = bool(check_weights)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if not isinstance(loss, torch.Tensor):
            loss = trainer.callback_metrics.get("train/loss_step", trainer.callback_metrics.get("train/loss"))
        where = f"global step {trainer.global_step} (epoch {trainer.current_epoch}, batch {batch_idx})"
        # one device-host sync per step: the loss and every weight folded into one finiteness flag; the
        # culprit is looked for only once the flag is down
        sums = [loss.detach().float().sum()] if isinstance(loss, torch.Tensor) else []
        if self.check_weights:
            sums += [p.detach().float().sum() for p in pl_module.parameters()]
        if not sums or bool(torch.stack([s.to(sums[0].device) for s in sums]).isfinite().all()):
            return
        if isinstance(loss, torch.Tensor) and not math.isfinite(float(loss.detach().float().sum())):
            self._stop(trainer, f"the training loss is {float(loss.detach().float().sum())} at {where}")
        bad = next((n for n, p in pl_module.named_parameters() if not bool(p.detach().isfinite().all())),
                   "(a sum over the weights overflowed)")
        self._stop(trainer, f"the weight {bad!r} holds NaN/inf after {where}")

    @staticmethod
    def _stop(trainer: pl.Trainer, what: str) -> None:
        raise NonFiniteTrainingError(
            f"{what}; training stopped before this step's checkpoint was written (the last good one is kept). "
            "Lower model.optim.lr, check loss weights (trades_beta, alpha, temperature) and the data for NaN/inf")


class RankErrorReport(Callback):
    """Under DDP, the rank that fails writes its one-line error to
    ``<default_root_dir>/.rank_errors/rank<r>.txt``; ``train.py`` on every other rank (which then
    fails on a collective whose peer is gone, a gloo/NCCL error) prints that line last, so all
    ranks end with the error that caused the stop. See :func:`peer_error`."""

    #: the folder of the run in progress in this process (read by :func:`peer_error`)
    current_dir: Optional[str] = None
    started: float = 0.0
    #: this process's global rank in that run (read by :func:`this_rank`)
    global_rank: Optional[int] = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        import time
        from pathlib import Path

        if trainer.world_size > 1:
            RankErrorReport.current_dir = str(Path(trainer.default_root_dir) / ".rank_errors")
            RankErrorReport.started = time.time()
            RankErrorReport.global_rank = int(trainer.global_rank)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        from pathlib import Path

        if trainer.world_size <= 1 or RankErrorReport.current_dir is None:
            return
        line = error_line(exception) or f"error: {type(exception).__name__}: {exception}".splitlines()[0]
        folder = Path(RankErrorReport.current_dir)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".rank{trainer.global_rank}.tmp"
        tmp.write_text(line.replace("error: ", f"error: rank {trainer.global_rank}: ", 1))
        tmp.replace(folder / f"rank{trainer.global_rank}.txt")


def this_rank() -> int:
    """This process's global rank: the trainer's once a run is set up, else the launcher's ``RANK``
    (torchrun) or ``SLURM_PROCID`` (srun). Not ``LOCAL_RANK``: with several nodes every node has a local
    rank 0, and the error files of :class:`RankErrorReport` are keyed by global rank."""
    import os

    if RankErrorReport.global_rank is not None:
        return RankErrorReport.global_rank
    for key in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    return 0


def peer_error(own_rank: int, wait_s: float = 10.0) -> Optional[str]:
    """The first error line another rank of this run wrote (waiting up to ``wait_s`` for one)."""
    import time
    from pathlib import Path

    if RankErrorReport.current_dir is None:
        return None
    folder = Path(RankErrorReport.current_dir)
    deadline = time.monotonic() + wait_s
    while True:
        found = sorted((p.stat().st_mtime, p) for p in folder.glob("rank*.txt")
                       if p.name != f"rank{own_rank}.txt" and p.stat().st_mtime >= RankErrorReport.started - 1)
        if found:
            return found[0][1].read_text().strip()
        if time.monotonic() > deadline:
            return None
        time.sleep(0.2)
