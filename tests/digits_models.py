"""The two scikit-learn digits models three learning test files share (test_learning.py, test_distill.py,
test_attack_suite_learning.py): small_cnn trained naturally, and with PGD-5 adversarial training (eps 0.15),
10 epochs each. Each is trained once per test session and shared by the xdist workers through a folder of the
session (the ``digits_models`` fixture in conftest.py): the first worker to ask trains under a file lock and
saves the weights, the others wait and load them (``weights_only=True``). Training is seeded (before the
module is built and before the fit) and runs on one torch thread, so the weights do not depend on which
worker trains or on the order of the tests."""
from __future__ import annotations

import os
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
from filelock import FileLock
from torch import nn

from helpers import seeded_fit
from lightning_adv.attacks import PGD
from lightning_adv.datamodules import DigitsDataModule
from lightning_adv.modules import AdvTraining, Classifier, OptimConfig
from lightning_adv.objectives import PGDAT

EPS = 0.15  # digits have 16 grey levels: 0.15 is about 2.4 levels
EPOCHS = 10
KINDS = ("natural", "pgd")
ADAM = OptimConfig(optimizer="adam", lr=3e-3, weight_decay=0.0, scheduler="constant")


def build_module(kind: str):
    """The untrained module of ``kind``: a Classifier, or AdvTraining with PGDAT(PGD(eps 0.15, 5 steps of
    eps / 2.5, the model in train mode while attacked))."""
    if kind not in KINDS:
        raise ValueError(f"digits model kind={kind!r}: use one of {KINDS}")
    if kind == "natural":
        return Classifier(arch="small_cnn", in_channels=1, optim=ADAM)
    attack = PGD(eps=EPS, steps=5, step_size=EPS / 2.5, bn_mode="train")
    return AdvTraining(arch="small_cnn", in_channels=1, optim=ADAM, objective=PGDAT(attack=attack))


def train(kind: str, root: Path) -> dict[str, torch.Tensor]:
    """The backbone's state dict after ``EPOCHS`` epochs on digits (batch 64), on one torch thread, seeded with 0
    before the weights are drawn and again before the fit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pl.seed_everything(0, verbose=False)
        module = seeded_fit(build_module(kind), DigitsDataModule(batch_size=64), EPOCHS, root)
    finally:
        torch.set_num_threads(threads)
    return module.model.state_dict()


class DigitsModels:
    """The models of one test session, kept in ``folder`` (common to the session's xdist workers)."""

    def __init__(self, folder: Path, worker: str) -> None:
        self.folder, self.worker = Path(folder), worker
        self.seen: set[str] = set()  # kinds this process already has on disk
        self.folder.mkdir(parents=True, exist_ok=True)

    def log(self, line: str) -> None:
        """Who trained and who loaded, one line each, in ``<folder>/log.txt``."""
        with open(self.folder / "log.txt", "a") as f:
            f.write(f"{self.worker}: {line}\n")

    def path(self, kind: str) -> Path:
        """The file of ``kind``'s weights (a raw state dict), trained here unless a worker already saved it."""
        path = self.folder / f"{kind}.pt"
        if kind in self.seen:
            return path
        with FileLock(str(path) + ".lock"):
            if path.exists():
                self.log(f"loaded {kind}")
            else:
                t0 = time.perf_counter()
                state = train(kind, self.folder / f"{kind}-run")
                part = path.with_suffix(".part")
                torch.save(state, part)
                os.replace(part, path)
                self.log(f"trained {kind} ({time.perf_counter() - t0:.0f} s)")
        self.seen.add(kind)
        return path

    def model(self, kind: str) -> nn.Module:
        """A fresh copy of ``kind``'s trained backbone in eval mode."""
        model = build_module(kind).model
        model.load_state_dict(torch.load(self.path(kind), map_location="cpu", weights_only=True))
        return model.eval()
