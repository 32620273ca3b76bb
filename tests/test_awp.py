"""AWP inside a Trainer: its weight perturbation is taken off before any callback can save or read the weights."""
from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from lightning_adv.attacks import PGD
from lightning_adv.modules import AdvTraining, OptimConfig
from lightning_adv.objectives import AWP, PGDAT

STEPS = 3


class _WeightsAtBatchStart(Callback):
    """The module's weights when each batch starts: those the optimiser steps of the batches before left."""

    def __init__(self) -> None:
        self.states: list[dict[str, torch.Tensor]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.states.append({k: v.detach().clone() for k, v in pl_module.state_dict().items()})


def _fit(root):
    pl.seed_everything(0)
    attack = PGD(eps=0.1, steps=1, step_size=0.1, random_start=False, bn_mode="eval")
    module = AdvTraining(arch="small_cnn", in_channels=1, optim=OptimConfig(lr=0.05),
                         objective=AWP(inner=PGDAT(attack=attack), gamma=0.05))
    g = torch.Generator().manual_seed(1)
    n = 8 * (STEPS + 1)
    data = TensorDataset(torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g))
    seen = _WeightsAtBatchStart()
    ckpt = ModelCheckpoint(dirpath=root, every_n_train_steps=1, save_top_k=-1, filename="s{step}",
                           auto_insert_metric_name=False)
    trainer = pl.Trainer(max_steps=STEPS + 1, limit_val_batches=0, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[seen, ckpt], accelerator="cpu")
    trainer.fit(module, DataLoader(data, batch_size=8))
    return module, seen.states


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    root = tmp_path_factory.mktemp("awp")
    return root, *_fit(root)


def test_step_checkpoints_hold_the_unperturbed_weights(fitted):
    """The checkpoint written after optimiser step k is the model batch k + 1 starts from (no gamma-sized
    difference in any conv / linear weight); before the fix each perturbed layer differed by the perturbation."""
    tmp_path, module, states = fitted
    for step in range(1, STEPS + 1):
        saved = torch.load(tmp_path / f"s{step}.ckpt", map_location="cpu", weights_only=True)["state_dict"]
        expected = states[step]
        assert saved.keys() == expected.keys()
        moved = [k for k in saved if not torch.equal(saved[k], expected[k])]
        assert not moved, f"step {step}: {moved} differ from the unperturbed weights"
    last = torch.load(tmp_path / f"s{STEPS + 1}.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    assert all(torch.equal(v, module.state_dict()[k]) for k, v in last.items())
    assert module.objective._applied is None


def test_trainer_steps_equal_a_hand_written_awp_loop(fitted):
    """Same seed, same weights: each Trainer step is ``obj.step`` (the model at w + v), SGD on its loss, then v
    taken off (``after_batch``), as a plain loop computes it (OptimConfig's SGD: momentum 0.9, weight decay)."""
    _, module, states = fitted
    pl.seed_everything(0)
    attack = PGD(eps=0.1, steps=1, step_size=0.1, random_start=False, bn_mode="eval")
    ref = AdvTraining(arch="small_cnn", in_channels=1, optim=OptimConfig(lr=0.05),
                      objective=AWP(inner=PGDAT(attack=attack), gamma=0.05))
    assert all(torch.equal(v, states[0][k]) for k, v in ref.state_dict().items())  # the same start
    opt = torch.optim.SGD(ref.parameters(), lr=0.05, momentum=0.9, weight_decay=2e-4)
    g = torch.Generator().manual_seed(1)
    n = 8 * (STEPS + 1)
    x_all, y_all = torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)
    for i in range(STEPS + 1):
        x, y = x_all[8 * i: 8 * i + 8], y_all[8 * i: 8 * i + 8]
        out = ref.objective.step(ref, x, y)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        ref.objective.after_batch(ref)
        expected = states[i + 1] if i + 1 < len(states) else module.state_dict()
        for k, v in ref.state_dict().items():
            assert torch.allclose(v, expected[k], rtol=1e-5, atol=1e-6), (i, k)
