"""The cheap training-step path (issue 22) changes no result: the same weights after N steps as a plain
loop and as the per-step logging path (``step_logging=True``), the same logged epoch values, and no
tensor-to-Python conversion (a GPU sync) inside a training step."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("step_overhead", REPO / "benchmarks" / "step_overhead.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["step_overhead"] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("step_overhead", None)


#: the epoch value of each quantity: its name on the cheap path, its name on the per-step path
EPOCH_NAMES = {"natural": {"train/loss": "train/loss_epoch", "train/acc": "train/acc"},
               "pgd_at": {"train/loss": "train/loss_epoch", "train/acc": "train/acc", "train/adv_acc": "train/adv_acc"},
               "trades": {"train/loss": "train/loss_epoch", "train/acc": "train/acc", "train/adv_acc": "train/adv_acc",
                          "train/trades_kl": "train/trades_kl"}}


def _fit(bench, kind: str, steps: int, step_logging: bool):
    module = bench.make_module(kind)
    module.step_logging = step_logging
    torch.manual_seed(1)
    trainer = bench.trainer(steps, [])
    trainer.fit(module, train_dataloaders=bench.make_loader(steps))
    return module.model.state_dict(), dict(trainer.callback_metrics)


@pytest.mark.parametrize("kind", ["natural", "pgd_at", "trades"])
def test_cheap_path_gives_the_weights_and_metrics_of_the_per_step_path_and_of_a_plain_loop(bench, kind) -> None:
    steps = 6
    cheap_w, cheap_m = _fit(bench, kind, steps, step_logging=False)
    step_w, step_m = _fit(bench, kind, steps, step_logging=True)
    trainer_w, plain_w = bench.compare_weights(kind, steps)
    for name, w in cheap_w.items():
        assert torch.equal(w, step_w[name]), name  # the same ops in the same order: bit for bit
        assert torch.allclose(w, plain_w[name], rtol=1e-5, atol=1e-6), name
        assert torch.equal(w, trainer_w[name]), name
    assert "train/loss_step" in step_m and "train/loss_step" not in cheap_m
    for cheap_name, step_name in EPOCH_NAMES[kind].items():
        assert cheap_m[cheap_name].item() == pytest.approx(step_m[step_name].item(), rel=1e-6, abs=1e-7), cheap_name
    # the epoch loss is the mean of the plain loop's losses (equal batch sizes), recomputed here
    plain = bench.make_module(kind)
    opt = bench.plain_optimizer(plain)
    torch.manual_seed(1)
    losses = [bench.plain_step(plain, opt, x, y) for x, y in bench.make_loader(steps)]
    assert cheap_m["train/loss"].item() == pytest.approx(torch.stack(losses).mean().item(), rel=1e-5)


@pytest.mark.parametrize("kind", ["natural", "pgd_at", "trades"])
def test_a_training_step_converts_no_tensor_to_python(bench, kind) -> None:
    sites = bench.step_conversions(kind)
    device_syncs = {k: n for k, n in sites.items() if not bench.host_only(k)}
    assert device_syncs == {}, device_syncs
    # the probe itself works: a conversion inside a step is caught
    with bench.HostConversions() as probe:
        float(torch.ones(()))
    assert len(probe.sites) == 1 and "test_step_overhead.py" in next(iter(probe.sites))


def test_the_input_range_is_still_checked_in_training(bench) -> None:
    module = bench.make_module("pgd_at")
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.rand(2, 16, 1, 8, 8) * 255,
                                                                        torch.zeros(2, 16, dtype=torch.long)),
                                         batch_size=None)
    with pytest.raises(ValueError, match=r"inputs must be images in \[0, 1\]"):
        bench.trainer(2, []).fit(module, train_dataloaders=loader)
