"""Chapter-6 training parts in Lightning: NormBias, rank projection and analysis callbacks, initialisations."""
from __future__ import annotations

import math
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightning_adv.modules import AdvTraining, Classifier, NormBias
from lightning_adv.modules.regularizers import coerce_regularizer


def _loader(n: int = 64, batch: int = 16, size: int = 8, seed: int = 0) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, size, size, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=batch)


def _trainer(tmp_path: Path, epochs: int, callbacks: list = (), **kw) -> pl.Trainer:
    return pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                      callbacks=list(callbacks), **kw)


def _sq_norm(module: torch.nn.Module) -> float:
    return float(sum(p.detach().double().square().sum() for p in module.model.parameters() if p.requires_grad))


@pytest.mark.parametrize("method", ["natural", "free"])
@pytest.mark.parametrize("factor", [4.0, 0.25])
def test_norm_bias_with_a_large_coefficient_drives_the_parameter_norm_to_mu(method, factor, tmp_path) -> None:
    torch.manual_seed(0)
    common = dict(arch="mlp", num_classes=10, in_channels=1, arch_kwargs={"input_size": 8, "hidden": [32]},
                  optim={"optimizer": "sgd", "lr": 0.01, "momentum": 0.0, "weight_decay": 0.0, "scheduler": "constant"})
    probe = Classifier(**common)
    mu_squared = factor * _sq_norm(probe)
    reg = NormBias(coef=1.0, mu_squared=mu_squared)
    if method == "natural":
        module = Classifier(**common, regularizer=reg)
    else:  # manual optimisation (free AT, 2 replays): the same hook applies the regulariser
        module = AdvTraining(**common, method="free", free_replays=2, attack={"eps": 0.1}, regularizer=reg)
    module.model.load_state_dict(probe.model.state_dict())
    start = _sq_norm(module)
    trainer = _trainer(tmp_path, epochs=25)
    trainer.fit(module, train_dataloaders=_loader())
    end = _sq_norm(module)
    # from |start - mu^2| = |1 - factor| * start to within 5% of mu^2
    assert abs(end - mu_squared) < 0.05 * mu_squared, (start, end, mu_squared)
    assert abs(start - mu_squared) > 0.5 * mu_squared
    assert "train/param_norm" in trainer.callback_metrics and "train/regularizer" in trainer.callback_metrics
    assert float(trainer.callback_metrics["train/param_norm"]) == pytest.approx(math.sqrt(end), rel=1e-3)
    assert module.hparams["regularizer"] == {"class_path": "lightning_adv.modules.regularizers.NormBias",
                                             "init_args": {"coef": 1.0, "mu_squared": mu_squared}}


def test_norm_bias_gradient_is_that_of_eq_6_3_and_arguments_are_checked() -> None:
    torch.manual_seed(0)
    params = [torch.randn(3, 4, requires_grad=True), torch.randn(5, requires_grad=True)]
    sq = float(sum(p.detach().square().sum() for p in params))
    for mu2, sign in [(sq + 10, -1.0), (max(sq - 10, 0.0), 1.0)]:
        for p in params:
            p.grad = torch.ones_like(p)
        value, norm = NormBias(coef=0.5, mu_squared=mu2).add_gradient_(params)
        assert value == pytest.approx(0.5 * abs(sq - mu2), rel=1e-5)
        assert norm == pytest.approx(math.sqrt(sq), rel=1e-6)
        for p in params:
            assert torch.allclose(p.grad, 1 + sign * 0.5 * 2 * p.detach(), atol=1e-6)
    with pytest.raises(ValueError, match="coef"):
        NormBias(coef=0.0)
    with pytest.raises(ValueError, match="mu_squared"):
        NormBias(mu_squared=-1.0)
    assert coerce_regularizer(NormBias(0.1, 3.0).to_dict()).mu_squared == 3.0
    with pytest.raises(ValueError, match="regularizer"):
        coerce_regularizer({"class_path": "os.system", "init_args": {}})
