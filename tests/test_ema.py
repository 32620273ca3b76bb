"""EMA of the weights (callbacks/ema.py): what the evaluator attacks, checkpoints, exact resume."""
from __future__ import annotations

import copy

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from helpers import quiet_trainer
from lightning_adv.attacks import PGD, AttackSuite
from lightning_adv.callbacks import EMA, PGDEvaluation, ResumeState
from lightning_adv.datamodules import DigitsDataModule
from lightning_adv.modules import AdvTraining
from lightning_adv.objectives import AWP

ATTACK = {"eps": 0.15, "steps": 3, "step_size": 0.06, "random_start": False, "name": "pgd3"}


def _module():
    return AdvTraining(arch="small_cnn", in_channels=1, optim={"optimizer": "adam", "lr": 0.01},
                       objective={"class_path": "lightning_adv.objectives.PGDAT",
                                  "init_args": {"attack": {"eps": 0.1, "steps": 1, "step_size": 0.1}}})


class Probe(pl.Callback):
    """Raw weights after each optimiser step; the weights seen while validating / testing."""

    def __init__(self):
        self.raw, self.val, self.test, self.start = [], None, None, None

    def on_train_start(self, trainer, pl_module):
        self.start = copy.deepcopy(pl_module.state_dict())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.raw.append(copy.deepcopy(pl_module.state_dict()))

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.val = copy.deepcopy(pl_module.state_dict())

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.test = copy.deepcopy(pl_module.state_dict())


def _manual_ema(states, decay, avg=None, n0=0):
    """The warm-up EMA of ``states`` (from ``avg`` after ``n0`` updates; none: the first state is copied)."""
    if avg is None:
        avg, states, n0 = {k: v.clone() for k, v in states[0].items()}, states[1:], 1
    avg = {k: v.clone() for k, v in avg.items()}
    for n, s in enumerate(states, start=n0):
        d = min(decay, (1 + n) / (10 + n))
        for k, v in s.items():
            avg[k] = avg[k] * d + v * (1 - d) if v.is_floating_point() else v.clone()
    return avg


@pytest.mark.parametrize("ema_first", [True, False], ids=["ema_first", "ema_last"])
def test_validation_attacks_the_averaged_weights(ema_first, tmp_path):
    pl.seed_everything(0)
    probe, ema, ev = Probe(), EMA(decay=0.7), PGDEvaluation(attacks=[ATTACK])
    trainer = quiet_trainer(tmp_path, callbacks=[ema, ev, probe] if ema_first else [probe, ev, ema], max_epochs=1,
                            limit_train_batches=5, limit_val_batches=2)
    module, dm = _module(), DigitsDataModule(batch_size=32)
    trainer.fit(module, dm)
    manual = _manual_ema(probe.raw, 0.7)
    for k, v in manual.items():  # the weights validated are the averaged ones, not the raw ones
        assert torch.allclose(probe.val[k].float(), v.float(), atol=1e-6), k
    assert not torch.allclose(probe.val["model.fc.weight"] if "model.fc.weight" in manual else
                              next(v for k, v in probe.val.items() if k.endswith("weight")),
                              probe.raw[-1]["model.fc.weight"] if "model.fc.weight" in manual else
                              next(v for k, v in probe.raw[-1].items() if k.endswith("weight")))
    # the evaluator's number is the AttackSuite result of a manually averaged copy
    copy_model = _module()
    copy_model.load_state_dict(manual)
    copy_model.eval()
    loader = dm.val_dataloader()
    xs, ys = zip(*[b for _, b in zip(range(2), loader)])
    report, _ = AttackSuite([PGD(**ATTACK)]).evaluate(copy_model, torch.cat(xs), torch.cat(ys))
    assert ev.reports["val"].worst_case_acc == pytest.approx(report.worst_case_acc)
    assert trainer.callback_metrics["val/robust_acc"].item() == pytest.approx(report.worst_case_acc)
    assert trainer.callback_metrics["ema/updates"].item() == len(probe.raw)


def test_checkpoints_test_and_resume_keep_the_average(tmp_path):
    def run(root, epochs, ckpt=None):
        pl.seed_everything(0)
        probe, ema = Probe(), EMA(decay=0.8)
        ckpt_cb = ModelCheckpoint(dirpath=root, save_last=True, save_top_k=0)
        trainer = quiet_trainer(root, callbacks=[ResumeState(), ema, probe, ckpt_cb], max_epochs=epochs,
                                limit_train_batches=5, limit_val_batches=2, enable_checkpointing=True)
        module = _module()
        trainer.fit(module, DigitsDataModule(batch_size=32), ckpt_path=ckpt)
        return trainer, module, ema, probe

    trainer, half, half_ema, probe = run(tmp_path / "half", 1)
    last = torch.load(tmp_path / "half" / "last.ckpt", weights_only=True)
    averaged, raw = last["state_dict"], last["current_model_state"]
    assert all(torch.equal(averaged[k], v) for k, v in half_ema.averaged_state().items())
    assert all(torch.equal(raw[k], v) for k, v in probe.raw[-1].items())  # not the average copied in at the end
    assert not all(torch.equal(raw[k], v) for k, v in averaged.items())
    # test in the same process, from the checkpoint: the averaged weights are tested
    trainer.test(half, DigitsDataModule(batch_size=32), ckpt_path=str(tmp_path / "half" / "last.ckpt"))
    assert all(torch.equal(probe.test[k], v) for k, v in averaged.items())
    # resume for one more epoch: training continues from the raw weights, and the average continues
    # from the saved one with the saved update count (the warm-up decay depends on it)
    _, resumed, resumed_ema, probe2 = run(tmp_path / "resumed", 2, ckpt=str(tmp_path / "half" / "last.ckpt"))
    assert all(torch.equal(probe2.start[k], v) for k, v in raw.items())
    n0 = int(last["averaging_state"]["n_averaged"])
    assert n0 == len(probe.raw) and len(probe2.raw) == 5
    manual = _manual_ema(probe2.raw, 0.8, avg=averaged, n0=n0)
    for k, v in resumed_ema.averaged_state().items():
        assert torch.allclose(v.float(), manual[k].float(), atol=1e-6), k
    assert all(torch.equal(resumed.state_dict()[k], v) for k, v in resumed_ema.averaged_state().items())


def test_refusals():
    with pytest.raises(ValueError, match="EMA.decay=1.0"):
        EMA(decay=1.0)


class StepStart(pl.Callback):
    """The weights at the start of each training batch (the previous step's unperturbed result) and at the
    end of training (before the EMA callback, listed after this one, swaps the average in)."""

    def __init__(self):
        self.states = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.states.append(copy.deepcopy(pl_module.state_dict()))

    def on_train_end(self, trainer, pl_module):
        self.states.append(copy.deepcopy(pl_module.state_dict()))


def test_awp_training_averages_the_unperturbed_weights(tmp_path):
    """AWP perturbs the weights inside each step; the module takes the perturbation off in its
    ``optimizer_step``, so the average is of the weights each step ends with (the next step starts from
    them), not of perturbed ones. Fails if the perturbation is taken off after the callbacks'
    ``on_train_batch_end`` (the average would hold it)."""
    pl.seed_everything(0)
    steps, ema, starts = 4, EMA(decay=0.8), StepStart()
    module = AdvTraining(arch="small_cnn", in_channels=1, optim={"optimizer": "sgd", "lr": 0.05},
                         objective=AWP(inner={"class_path": "lightning_adv.objectives.TRADES",
                                              "init_args": {"attack": {"eps": 0.1, "steps": 1, "step_size": 0.1}}},
                                       gamma=0.05))
    trainer = quiet_trainer(tmp_path, callbacks=[starts, ema], max_steps=steps, limit_val_batches=0)
    trainer.fit(module, DigitsDataModule(batch_size=32))
    assert len(starts.states) == steps + 1
    manual = _manual_ema(starts.states[1:], 0.8)  # the weights after steps 1..4
    for k, v in ema.averaged_state().items():
        assert torch.allclose(v.float(), manual[k].float(), atol=1e-6), k
