"""Mixed precision and channels_last (docs/precision.md): attacks under autocast, the evaluator's
fp32 default, a bf16-mixed fit through train.py, channels_last fits equal to contiguous ones."""
from __future__ import annotations

import importlib
import math

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader, TensorDataset

from helpers import REPO
from lightning_adv.attacks import PGD, AttackSuite
from lightning_adv.attacks.losses import cross_entropy_loss
from lightning_adv.attacks.threat import make_threat
from lightning_adv.callbacks import AttackSuiteEvaluation, PGDEvaluation
from lightning_adv.cli import main
from lightning_adv.models import create_model
from lightning_adv.modules import AdvTraining, Classifier, ComputeConfig, OptimConfig
from lightning_adv.objectives import PGDAT

pgd_mod = importlib.import_module("lightning_adv.attacks.pgd")  # the package exports a function `pgd`
BF16 = dict(device_type="cpu", dtype=torch.bfloat16)


@pytest.fixture(scope="module")
def digits_model(digits_split):
    """A small CNN trained (naturally, 12 epochs) on 1000 digits; the other 797 are the test set."""
    x_train, y_train, x_test, y_test = digits_split  # conftest: shuffled with seed 0
    x, y = torch.cat([x_train, x_test]), torch.cat([y_train, y_test])
    torch.manual_seed(0)
    model = create_model("small_cnn", num_classes=10, in_channels=1, width=16)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(12):
        order = torch.randperm(1000)
        for i in range(0, 1000, 50):
            idx = order[i:i + 50]
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    model.eval()
    return model, x[1000:], y[1000:]


def test_input_gradients_under_bf16_autocast_are_finite_nonzero_fp32(digits_model):
    model, x, y = digits_model
    x, y = x[:64], y[:64]
    with torch.autocast(**BF16):
        assert model(x).dtype == torch.bfloat16  # the forward really runs in bf16
        g = pgd_mod.input_gradient(model, x, y, cross_entropy_loss)
    assert g.dtype == torch.float32
    assert torch.isfinite(g).all()
    assert (g.flatten(1).abs().sum(1) > 0).float().mean() > 0.95  # nonzero for (almost) every example
    ref = pgd_mod.input_gradient(model, x, y, cross_entropy_loss)
    agree = (g.sign() == ref.sign()).float().mean()
    assert agree > 0.9, f"bf16 and fp32 gradient signs agree on only {agree:.2%} of the pixels"
    # the whole PGD loop: x_adv stays fp32, in [0, 1] and inside the ball
    eps = 0.1
    with torch.autocast(**BF16):
        x_adv = pgd_mod.pgd(model, x, y, make_threat("linf", eps), steps=5, step_size=0.03,
                            loss_fn=cross_entropy_loss)
    assert x_adv.dtype == torch.float32 and x_adv.min() >= 0 and x_adv.max() <= 1
    assert (x_adv - x).abs().max() <= eps + 1e-6
    assert (x_adv != x).any()


def test_fp16_autocast_gradient_stays_finite_where_fp16_overflows():
    """Logits beyond fp16's range (65504): the gradient is recomputed with autocast off."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 10))
    with torch.no_grad():
        model[1].weight.mul_(4e5)
    x, y = torch.rand(8, 1, 4, 4), torch.randint(0, 10, (8,))
    with torch.autocast("cpu", dtype=torch.float16):
        assert pgd_mod.fp16_autocast("cpu")
        assert not torch.isfinite(model(x)).all()  # the fp16 forward overflows
        g = pgd_mod.input_gradient(model, x, y, cross_entropy_loss)
    assert g.dtype == torch.float32 and torch.isfinite(g).all() and (g != 0).any()


def test_pgd20_robust_accuracy_bf16_within_one_point_of_fp32(digits_model):
    """797 held-out digits, PGD-20 eps 0.05: the suite run under bf16 autocast vs fp32. Also: the
    suite's default (precision='fp32') inside a bf16 autocast block gives exactly the fp32 numbers."""
    model, x, y = digits_model
    assert x.shape[0] >= 400

    def robust(precision: str, bf16: bool) -> tuple[float, float]:
        torch.manual_seed(1)
        suite = AttackSuite([PGD(eps=0.05, steps=20, step_size=0.0125, name="pgd20")], sanity_checks=False,
                            precision=precision)
        with torch.autocast(**BF16, enabled=bf16):
            report, _ = suite.evaluate(model, x, y, batch_size=400, warn=False)
        return report.clean_acc, report.worst_case_acc

    clean32, rob32 = robust("autocast", bf16=False)
    clean16, rob16 = robust("autocast", bf16=True)
    assert 0.5 < rob32 < clean32  # the attack bites but does not break everything: a meaningful comparison
    assert abs(rob16 - rob32) <= 0.01, f"PGD-20 robust accuracy bf16 {rob16:.2%} vs fp32 {rob32:.2%}"
    assert robust("fp32", bf16=True) == (clean32, rob32)


class _Probe(Callback):
    """Records, per training step, the memory format of the conv weights and of every input the first
    convolution sees (the attack's iterates and the training forward)."""

    def __init__(self) -> None:
        self.seen: list[tuple[bool, bool]] = []
        self._inputs: list[bool] = []

    def on_train_start(self, trainer, module):
        conv = next(m for m in module.model.modules() if isinstance(m, torch.nn.Conv2d))
        conv.register_forward_pre_hook(
            lambda m, args: self._inputs.append(args[0].is_contiguous(memory_format=torch.channels_last)))

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        convs = [m.weight for m in module.model.modules() if isinstance(m, torch.nn.Conv2d)]
        weights = all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
        assert len(set(self._inputs)) == 1, self._inputs  # one format for every forward of the step
        self.seen.append((weights, self._inputs[0]))
        self._inputs.clear()


def _fit_rgb_digits(memory_format: str, digits_split, adversarial: bool) -> tuple[dict, list]:
    x, y = digits_split[0][:96], digits_split[1][:96]
    x = torch.cat([x, x.flip(-1), x.flip(-2)], 1)  # 3 channels: channels_last differs from contiguous
    loader = DataLoader(TensorDataset(x, y), batch_size=32)
    pl.seed_everything(0)
    common = dict(arch="small_cnn", num_classes=10, in_channels=3, arch_kwargs={"width": 8},
                  optim=OptimConfig(lr=0.05, scheduler="constant"), compute=ComputeConfig(memory_format=memory_format))
    if adversarial:
        attack = PGD(eps=0.1, steps=2, step_size=0.05, bn_mode="train")
        module: Classifier = AdvTraining(objective=PGDAT(attack=attack), **common)
    else:
        module = Classifier(**common)
    probe = _Probe()
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[probe])
    trainer.fit(module, train_dataloaders=loader)
    return {k: v.detach().clone() for k, v in module.state_dict().items()}, probe.seen


@pytest.mark.parametrize("adversarial", [False, True], ids=["natural", "pgd_at"])
def test_channels_last_fit_is_channels_last_and_equals_contiguous(digits_split, adversarial):
    """Three SGD steps from the same seed. Natural training: equal up to float rounding. PGD-AT: sign
    steps turn a rounding difference in a near-zero input gradient into a full step on that pixel,
    so the weights agree to 1e-3 (absolute; weights are ~0.1-0.5), not to rounding."""
    cl_state, cl_seen = _fit_rgb_digits("channels_last", digits_split, adversarial)
    ref_state, ref_seen = _fit_rgb_digits("contiguous_format", digits_split, adversarial)
    assert cl_seen == [(True, True)] * 3
    assert ref_seen == [(False, False)] * 3
    assert cl_state.keys() == ref_state.keys()
    tol = dict(rtol=1e-3, atol=1e-3) if adversarial else dict(rtol=1e-4, atol=1e-5)
    for k in ref_state:
        torch.testing.assert_close(cl_state[k], ref_state[k], **tol)


def test_bf16_mixed_fit_through_train_py(tmp_path, monkeypatch):
    """quickstart.yaml with --trainer.precision bf16-mixed: the training attack runs under bf16
    autocast with finite gradients, the evaluator's attacks with autocast off; a checkpoint is written."""
    calls: list[tuple[bool, bool]] = []
    original = pgd_mod._gradient_once

    def spy(model, x_adv, target, loss_fn, targeted):
        g = original(model, x_adv, target, loss_fn, targeted)
        bf16 = torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
        calls.append((bf16, bool(torch.isfinite(g).all()) and g.dtype == torch.float32))
        return g

    monkeypatch.setattr(pgd_mod, "_gradient_once", spy)
    cli = main(["fit", "--config", str(REPO / "configs" / "quickstart.yaml"), "--trainer.logger", "false",
                "--trainer.default_root_dir", str(tmp_path), "--trainer.enable_progress_bar", "false",
                "--trainer.accelerator", "cpu", "--trainer.precision", "bf16-mixed", "--trainer.max_epochs", "1",
                "--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "1"])
    assert cli.trainer.precision == "bf16-mixed"
    assert all(ok for _, ok in calls)
    assert any(bf16 for bf16, _ in calls), "no training attack ran under bf16 autocast"
    assert any(not bf16 for bf16, _ in calls), "the evaluator's attacks did not run with autocast off"
    assert math.isfinite(float(cli.trainer.callback_metrics["train/loss"]))
    assert (tmp_path / "checkpoints" / "last.ckpt").exists()


def test_bad_values_are_one_line_value_errors(monkeypatch):
    cases = [
        (lambda: ComputeConfig(memory_format="nhwc"), "compute.memory_format='nhwc'"),
        (lambda: ComputeConfig(compile_mode="fast"), "compute.compile_mode='fast'"),
        (lambda: Classifier(arch="mlp", in_channels=1, arch_kwargs={"input_size": 8},
                            compute=ComputeConfig(memory_format="channels_last")), "arch='mlp' has none"),
        (lambda: ComputeConfig(memory_format="channels_last").check_input_shape((40,), "LobsterDataModule"),
         "input shape (40,)"),
        (lambda: AttackSuite([PGD(eps=0.1)], precision="bf16"), "AttackSuite.precision='bf16'"),
        (lambda: PGDEvaluation(attack_precision="amp"), "PGDEvaluation.attack_precision='amp'"),
        (lambda: AttackSuiteEvaluation([PGD(eps=0.1)], attack_precision="half"), "attack_precision='half'"),
    ]
    monkeypatch.setattr("shutil.which", lambda name: None)  # no C++ compiler: inductor on CPU is refused early
    inductor = ComputeConfig(compile=True)
    cases.append((lambda: inductor.check_device("cpu"), "compile_backend: aot_eager"))
    ComputeConfig(compile=True, compile_backend="aot_eager").check_device("cpu")  # needs no compiler
    import torch._dynamo

    monkeypatch.setattr(torch._dynamo, "is_dynamo_supported", lambda: False)  # a torch/Python without compile
    cases.append((lambda: ComputeConfig(compile=True), "set compute.compile: false"))
    for make, text in cases:
        with pytest.raises(ValueError) as err:
            make()
        msg = str(err.value)
        assert text in msg and "\n" not in msg, msg
