"""Augmentation choices and CutMix/MixUp batches of the image datamodules (datamodules/augment.py)."""
from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from torchvision import transforms

from helpers import quiet_trainer
from lightning_adv.datamodules import CIFAR10DataModule, DigitsDataModule, MNISTDataModule
from lightning_adv.datamodules.augment import MixCollate
from lightning_adv.modules import AdvTraining, Classifier
from lightning_adv.objectives import MART, PGDAT, TRADES, Free


def _shift(img: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``img`` translated by (dy, dx) with zero fill (what a zero-padded random crop gives)."""
    pad = max(abs(dy), abs(dx))
    h, w = img.shape[-2:]
    padded = F.pad(img, (pad, pad, pad, pad))
    return padded[..., pad - dy:pad - dy + h, pad - dx:pad - dx + w]


def _translations(img: torch.Tensor, pad: int) -> list[tuple[int, int]]:
    """Every (dy, dx) within ``pad`` whose shift of ``img`` ... is returned by the caller's match."""
    return [(dy, dx) for dy in range(-pad, pad + 1) for dx in range(-pad, pad + 1)]


def _which(out: torch.Tensor, raw: torch.Tensor, pad: int, flip: bool) -> set[tuple[int, int, bool]]:
    found = set()
    for dy, dx in _translations(raw, pad):
        shifted = _shift(raw, dy, dx)
        for f in ([False, True] if flip else [False]):
            if torch.equal(out, torch.flip(shifted, [-1]) if f else shifted):
                found.add((dy, dx, f))
    return found


def _digits(augment, **kw) -> tuple[DigitsDataModule, torch.Tensor]:
    dm = DigitsDataModule(augment=augment, val_size=0.1, **kw)
    dm.setup("fit")
    raw = torch.stack([dm.train_dataset.dataset[i][0] for i in dm.train_dataset.indices[:40]])
    return dm, raw


def test_defaults_keep_each_datamodules_augmentation():
    assert CIFAR10DataModule(augment=True).augmentation == "flips+crops"
    assert CIFAR10DataModule(augment=False).augmentation == "none"
    assert DigitsDataModule().augmentation == "none" and DigitsDataModule(augment=True).augmentation == "crops"
    assert MNISTDataModule(augment=True).augmentation == "none"
    with pytest.raises(ValueError, match="augment='rotate'"):
        DigitsDataModule(augment="rotate")
    with pytest.raises(ValueError, match="mix='cutout'"):
        DigitsDataModule(mix="cutout")
    with pytest.raises(ValueError, match="mix_alpha=0"):
        DigitsDataModule(mix="mixup", mix_alpha=0)


def test_cifar_default_draws_the_same_numbers_as_before(standin_root):
    """augment=True builds crop-then-flip as the old pipeline did: same seed, same tensors."""
    dm = CIFAR10DataModule(data_dir=str(standin_root), val_size=8)
    dm.setup("fit")
    old = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                              transforms.ToTensor()])
    pil = [dm.train_dataset.dataset[i][0] for i in dm.train_dataset.indices[:16]]
    torch.manual_seed(3)
    new_out = [dm.train_dataset[i][0] for i in range(16)]
    torch.manual_seed(3)
    old_out = [old(p) for p in pil]
    assert all(torch.equal(a, b) for a, b in zip(new_out, old_out))


@pytest.mark.parametrize("augment,pad,flip", [("none", 0, False), ("flips", 0, True), ("crops", 1, False),
                                               ("flips+crops", 1, True)])
def test_digits_choice_does_what_it_says(augment, pad, flip):
    dm, raw = _digits(augment)
    torch.manual_seed(0)
    seen = set()
    for i in range(len(raw)):
        out = dm.train_dataset[i][0]
        match = _which(out, raw[i], pad, flip)
        assert match, f"{augment}: item {i} is not a zero-filled shift (<= {pad}) / flip of the original"
        seen |= match
    if augment == "none":
        assert all(torch.equal(dm.train_dataset[i][0], raw[i]) for i in range(len(raw)))
    if flip:  # both flipped and unflipped images occur (ambiguous symmetric images aside)
        assert {f for *_, f in seen} == {False, True}
    if pad:
        assert any((dy, dx) != (0, 0) for dy, dx, _ in seen)


@pytest.mark.parametrize("augment,flip", [("flips", True), ("crops", False)])
def test_cifar_choice_pixel_exact(standin_root, augment, flip):
    dm = CIFAR10DataModule(data_dir=str(standin_root), val_size=8, augment=augment)
    dm.setup("fit")
    to_t = transforms.ToTensor()
    torch.manual_seed(1)
    pad = 4 if augment == "crops" else 0
    kinds = set()
    for i in range(12):
        raw = to_t(dm.train_dataset.dataset[dm.train_dataset.indices[i]][0])
        match = _which(dm.train_dataset[i][0], raw, pad, flip)
        assert match
        kinds |= match
    assert any(k != (0, 0, False) for k in kinds)


def test_eval_splits_never_augmented_or_mixed():
    dm, _ = _digits("flips+crops", mix="cutmix_or_mixup")
    dm.setup("test")
    for ds, loader in ((dm.val_dataset, dm.val_dataloader()), (dm.test_dataset, dm.test_dataloader())):
        x, y = next(iter(loader))
        ref = torch.stack([ds.dataset[ds.indices[i] if ds.indices else i][0] for i in range(len(y))])
        assert torch.equal(x, ref) and y.dtype == torch.int64
    x, y = next(iter(dm.train_dataloader()))
    assert y.shape == (dm.batch_size, 10) and y.dtype == torch.float32


def _distinct_batch(n: int = 6) -> list[tuple[torch.Tensor, int]]:
    """Example i: a constant image of value (i + 1) / 10 with label i (so sources are recognisable)."""
    return [(torch.full((1, 8, 8), (i + 1) / 10), i) for i in range(n)]


def test_mixup_is_a_convex_combination_with_matching_labels():
    torch.manual_seed(0)
    batch = _distinct_batch()
    x, y = MixCollate("mixup", 1.0, 10)(batch)
    assert y.shape == (6, 10) and torch.allclose(y.sum(1), torch.ones(6))
    for i in range(6):
        lam = y[i, i].item()
        partner = (i - 1) % 6  # torchvision mixes with the batch rolled by one
        expected = lam * batch[i][0] + (1 - lam) * batch[partner][0]
        assert torch.allclose(x[i], expected, atol=1e-6)
        assert torch.isclose(y[i, partner], torch.tensor(1 - lam), atol=1e-6)


def test_cutmix_pastes_a_box_whose_area_is_the_label_weight():
    torch.manual_seed(2)
    batch = _distinct_batch()
    for _ in range(5):
        x, y = MixCollate("cutmix", 1.0, 10)(batch)
        assert torch.allclose(y.sum(1), torch.ones(6))
        for i in range(6):
            partner = (i - 1) % 6
            own = torch.isclose(x[i], batch[i][0])
            other = torch.isclose(x[i], batch[partner][0])
            assert bool((own | other).all())  # every pixel from one of the two images
            assert abs(own.float().mean().item() - y[i, i].item()) < 1e-6
            rows, cols = other[0].nonzero(as_tuple=True)
            if len(rows):  # the pasted part is one axis-aligned box
                box = other[0, rows.min():rows.max() + 1, cols.min():cols.max() + 1]
                assert bool(box.all()) and int(box.numel()) == len(rows)


def _fit(module, dm, epochs=3, batches=8):
    losses = []

    class Record(pl.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            losses.append(float(trainer.callback_metrics["train/loss"]))

    trainer = quiet_trainer(max_epochs=epochs, limit_train_batches=batches, limit_val_batches=0, callbacks=[Record()])
    trainer.fit(module, dm)
    return losses


@pytest.mark.parametrize("make", [
    lambda: Classifier(arch="small_cnn", in_channels=1, optim={"optimizer": "adam", "lr": 0.003}),
    lambda: AdvTraining(arch="small_cnn", in_channels=1, optim={"optimizer": "adam", "lr": 0.003},
                        objective=PGDAT(attack={"eps": 0.05, "steps": 2, "step_size": 0.03, "bn_mode": "train"})),
], ids=["natural", "pgdat"])
def test_soft_labels_train(make):
    pl.seed_everything(0)
    losses = _fit(make(), DigitsDataModule(batch_size=64, mix="cutmix_or_mixup"), epochs=5, batches=10)
    assert losses[-1] < losses[0] - 0.2, losses


def test_pgdat_attack_uses_the_soft_labels():
    """The training attack maximises CE to the soft labels: its loss is above the clean one."""
    torch.manual_seed(0)
    module = AdvTraining(arch="small_cnn", in_channels=1,
                         objective=PGDAT(attack={"eps": 0.2, "steps": 5, "step_size": 0.08, "bn_mode": "eval"}))
    module.eval()
    x, y = MixCollate("mixup", 1.0, 10)(_distinct_batch(8))
    x_adv = module.objective.perturb(module, x, y)
    with torch.no_grad():
        assert F.cross_entropy(module.model(x_adv), y) > F.cross_entropy(module.model(x), y)


@pytest.mark.parametrize("objective", [
    MART(), Free(), PGDAT(attack={"eps": 0.1, "steps": 1, "step_size": 0.1, "loss": "margin"})],
    ids=["mart", "free", "pgdat_margin"])
def test_objectives_that_need_hard_labels_refuse_mixing(objective):
    module = AdvTraining(arch="small_cnn", in_channels=1, objective=objective)
    trainer = pl.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    with pytest.raises(ValueError, match="data.mix='mixup' gives soft labels but ") as info:
        trainer.fit(module, DigitsDataModule(mix="mixup"))
    assert trainer.global_step == 0
    if isinstance(objective, PGDAT):  # the cause is the attack's loss, and the fix is a loss, not PGDAT again
        assert "attack.loss='margin'" in str(info.value) and "attack.loss ce" in str(info.value)
        assert "PGDAT or TRADES" not in str(info.value)
    else:
        assert f"objective {type(objective).__name__} needs hard labels" in str(info.value)
    assert TRADES.soft_labels and PGDAT().soft_labels
