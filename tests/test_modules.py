"""Unit behaviour of the LightningModules and the PGDEvaluation callback (fast, CPU)."""
from __future__ import annotations

import glob

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger

from helpers import quiet_trainer
from lightning_adv.callbacks import PGDEvaluation
from lightning_adv.datamodules import DigitsDataModule
from lightning_adv.attacks import FGSM, PGD
from lightning_adv.modules import AdvTraining, Classifier, OptimConfig
from lightning_adv.objectives import PGDAT, TRADES, Free


def _adv(objective=None, **kw) -> AdvTraining:
    base = dict(arch="small_cnn", num_classes=10, in_channels=1,
                optim=OptimConfig(optimizer="sgd", lr=0.05, milestones=[1]),
                objective=objective or PGDAT(attack=PGD(eps=0.1, steps=2, step_size=0.05, bn_mode="train")))
    base.update(kw)
    return AdvTraining(**base)


class _Recorder(Callback):
    """Records the free perturbation and parameter versions around every batch."""

    def __init__(self):
        self.deltas, self.param_changes, self.steps = [], [], []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self._before = [p.detach().clone() for p in module.parameters()]
        self._step = trainer.global_step

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.deltas.append(module.free.delta.detach().clone())
        self.param_changes.append(any(not torch.equal(a, b) for a, b in zip(self._before, module.parameters())))
        self.steps.append(trainer.global_step - self._step)


def test_free_training_replays_and_keeps_perturbation_in_ball(tmp_path):
    torch.manual_seed(0)
    m = 3
    module = _adv(Free(eps=0.1, replays=m))
    rec = _Recorder()
    trainer = quiet_trainer(tmp_path, max_epochs=2, limit_train_batches=5, limit_val_batches=0, callbacks=[rec])
    trainer.fit(module, DigitsDataModule(batch_size=32))
    assert rec.steps == [m] * 10  # the optimiser stepped m times per batch
    assert trainer.global_step == 10 * m
    assert all(rec.param_changes)
    for d in rec.deltas:
        assert d.abs().max() <= 0.1 + 1e-6
        assert d.abs().max() > 0  # the perturbation moves
    # persistent across batches: never reset to zero
    assert not torch.equal(rec.deltas[0], rec.deltas[1])
    # the schedule is stepped per epoch under manual optimisation
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.05 * 0.1)


def test_free_perturbation_hits_image_bounds_only_through_clamp():
    """x + delta is clamped to [0, 1] before the forward, delta stays in the eps-ball."""
    from lightning_adv.attacks import LinfThreat
    from lightning_adv.modules import FreeReplay

    seen = []

    class Fake(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def optimizers(self):
            return torch.optim.SGD([self.w], lr=0.1)

        def manual_backward(self, loss):
            loss.backward()

    fake = Fake()
    free = FreeReplay(LinfThreat(0.3), replays=4, step_size=0.3)
    x = torch.tensor([[0.0, 0.5, 1.0]])

    def closure(x_in):
        seen.append(x_in.detach().clone())
        out = (x_in * fake.w).sum(dim=1, keepdim=True)
        return -out.sum(), out  # minimising -sum => delta ascends +sum

    free.run(fake, x, closure)
    for x_in in seen:
        assert x_in.min() >= 0 and x_in.max() <= 1
    assert free.delta.abs().max() <= 0.3 + 1e-6


def test_trades_loss_matches_formula():
    torch.manual_seed(0)
    module = _adv(TRADES(beta=2.0, attack=PGD(eps=0.1, steps=1, random_start=False, start_sigma=0.001)))
    module.eval()  # deterministic forwards for the check
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,))
    captured = {}
    real_attack = module.objective.attack

    class Spy:
        bn_mode = real_attack.bn_mode

        def __call__(self, model, xx, target, **kw):
            captured["target"] = target
            captured["x_adv"] = real_attack(model, xx, target, **kw)
            return captured["x_adv"]

    module.objective.attack = Spy()
    module.log = lambda *a, **k: None
    loss = module.training_step((x, y), 0)
    with torch.no_grad():
        clean = module.model(x)
        adv = module.model(captured["x_adv"])
    kl = F.kl_div(F.log_softmax(adv, 1), F.softmax(clean, 1), reduction="batchmean")
    assert torch.allclose(loss, F.cross_entropy(clean, y) + 2.0 * kl, atol=1e-5)
    assert torch.allclose(captured["target"], F.softmax(clean, 1), atol=1e-6)  # KL attack target


def test_pgd_evaluation_matches_manual_computation(tmp_path):
    torch.manual_seed(0)
    module = Classifier(arch="mlp", arch_kwargs={"input_size": 8}, num_classes=10, in_channels=1,
                        optim=OptimConfig(optimizer="adam", lr=1e-2, scheduler="constant", weight_decay=0))
    dm = DigitsDataModule(batch_size=64)
    attacks = [PGD(eps=0.1, steps=5, step_size=0.03, random_start=False),
               FGSM(eps=0.1, name="fgsm")]
    logger = TensorBoardLogger(str(tmp_path), name="tb")
    trainer = quiet_trainer(tmp_path, max_epochs=3, logger=logger, callbacks=[PGDEvaluation(attacks=attacks)])
    trainer.fit(module, dm)
    m = trainer.callback_metrics
    # manual computation on the same validation set
    dm.setup("fit")
    xs, ys = zip(*[dm.val_dataset[i] for i in range(len(dm.val_dataset))])
    x, y = torch.stack(xs), torch.tensor(ys)
    module.eval()
    survived = torch.ones_like(y, dtype=torch.bool)
    for a in attacks:
        with torch.no_grad():
            ok = module(a(module, x, y)).argmax(1) == y
        survived &= ok
        assert m[f"val/robust_acc/{a.label}"].item() == pytest.approx(ok.float().mean().item(), abs=1e-6)
    assert m["val/robust_acc"].item() == pytest.approx(survived.float().mean().item(), abs=1e-6)
    assert m["val/robust_acc"] <= m["val/acc"]
    # the adversarial image grid reached TensorBoard
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(glob.glob(str(tmp_path / "tb" / "version_0" / "events*"))[0])
    ea.Reload()
    assert "val/adversarial_examples" in ea.Tags()["images"]
    assert "val/robust_acc/fgsm" in ea.Tags()["scalars"]


def test_checkpoint_hparams_load_with_weights_only(tmp_path):
    module = _adv(Free(eps=0.1, replays=2))
    trainer = quiet_trainer(tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=0)
    trainer.fit(module, DigitsDataModule(batch_size=16))
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, map_location="cpu", weights_only=True)  # no pickled objects
    assert ckpt["hyper_parameters"]["objective"]["init_args"]["eps"] == pytest.approx(0.1)
    assert ckpt["free_delta"].shape[1:] == (16, 1, 8, 8)
    restored = AdvTraining.load_from_checkpoint(path, weights_only=True)
    assert isinstance(restored.objective, Free) and restored.free.replays == 2
    assert torch.equal(restored.free.delta, module.free.delta.cpu())
    for a, b in zip(restored.parameters(), module.parameters()):
        assert torch.equal(a, b)


def test_model_data_mismatch_is_caught_before_training(tmp_path):
    module = _adv(num_classes=7)
    trainer = quiet_trainer(tmp_path, max_epochs=1)
    with pytest.raises(ValueError, match="num_classes"):
        trainer.fit(module, DigitsDataModule(batch_size=16))
    assert trainer.global_step == 0


@pytest.mark.parametrize("kwargs,param", [
    (lambda: dict(objective={"class_path": "lightning_adv.objectives.FGSMAT"}), "objective.class_path"),
    (lambda: dict(objective=Free(eps=0.1, replays=0)), "replays"),
    (lambda: dict(objective={"class_path": "lightning_adv.objectives.Free", "init_args": {"steps": 3}}), "steps"),
    (lambda: dict(objective=TRADES(beta=-1.0)), "beta"),
    (lambda: dict(objective=Free(step_size=0.0)), "step_size"),
    (lambda: dict(objective={"class_path": "lightning_adv.objectives.KD"}), "KnowledgeDistillation"),
])
def test_bad_module_arguments(kwargs, param):
    with pytest.raises(ValueError, match=param):
        _adv(**kwargs())
