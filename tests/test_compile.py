"""torch.compile as a module option (docs/precision.md): compiled and eager agree (forward, input
gradients, PGD), checkpoints load with compile on or off, ``_orig_mod.`` keys are accepted.

The tests compile with ``backend="aot_eager"`` (TorchDynamo + AOTAutograd, kernels run eagerly):
inductor generates C++ on CPU and took ~31 s for the first forward+backward of a three-layer CNN
on this 2-core machine (``aot_eager``: ~3.5 s), too slow for the default suite. What the option
changes in the project (the module's forward becomes a Dynamo-traced graph, the attack
differentiates through an AOTAutograd backward, the state dict keeps its keys) is the same for
both backends; inductor's own kernels are checked by benchmarks/gpu_check.sh.
"""
from __future__ import annotations

import copy

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightning_adv.attacks import PGD
from lightning_adv.models import create_model, load_model_weights
from lightning_adv.modules import AdvTraining, Classifier, ComputeConfig, OptimConfig
from lightning_adv.objectives import PGDAT

COMPILED = ComputeConfig(compile=True, compile_backend="aot_eager")


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _pair(digits_split):
    torch.manual_seed(0)
    compiled = Classifier(arch="small_cnn", num_classes=10, in_channels=1, arch_kwargs={"width": 8}, compute=COMPILED)
    eager = create_model("small_cnn", num_classes=10, in_channels=1, width=8)
    eager.load_state_dict(compiled.model.state_dict())  # same keys: nothing to strip
    return compiled.eval(), eager.eval(), digits_split[2][:64], digits_split[3][:64]


def test_compiled_and_eager_agree_forward_gradients_and_pgd(digits_split):
    compiled, eager, x, y = _pair(digits_split)
    assert compiled.model._compiled_call_impl is not None  # really compiled
    torch.testing.assert_close(compiled(x), eager(x), rtol=1e-5, atol=1e-5)

    def input_grad(model):
        xg = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(torch.nn.functional.cross_entropy(model(xg), y), xg)
        return g

    torch.testing.assert_close(input_grad(compiled), input_grad(eager), rtol=1e-4, atol=1e-7)
    attack = PGD(eps=0.1, steps=5, step_size=0.03)
    torch.manual_seed(3)
    adv_c = attack(compiled, x, y)  # through the compiled forward: parameters frozen, eval mode, autograd on
    torch.manual_seed(3)
    adv_e = attack(eager, x, y)
    assert (adv_c != x).any()
    same = (adv_c - adv_e).abs().le(1e-6).float().mean()
    assert same > 0.99, f"compiled and eager PGD agree on only {same:.2%} of the pixels"


def test_checkpoint_of_a_compiled_fit_loads_with_compile_off_and_on(digits_split, tmp_path):
    x, y = digits_split[0][:64], digits_split[1][:64]
    pl.seed_everything(0)
    module = AdvTraining(arch="small_cnn", num_classes=10, in_channels=1, arch_kwargs={"width": 8},
                         optim=OptimConfig(optimizer="adam", lr=1e-3, weight_decay=0.0, scheduler="constant"),
                         objective=PGDAT(attack=PGD(eps=0.1, steps=2, step_size=0.05, bn_mode="train")),
                         compute=COMPILED)
    trainer = pl.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(module, train_dataloaders=DataLoader(TensorDataset(x, y), batch_size=32))
    path = tmp_path / "compiled.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    assert not any("_orig_mod" in k for k in ckpt["state_dict"])
    assert ckpt["hyper_parameters"]["compute"]["compile"] is True
    reference = {k: v.clone() for k, v in module.state_dict().items()}
    for compute in (ComputeConfig(), COMPILED):
        loaded = AdvTraining.load_from_checkpoint(path, compute=compute)
        assert (loaded.model._compiled_call_impl is not None) == compute.compile
        for k, v in loaded.state_dict().items():
            torch.testing.assert_close(v, reference[k], rtol=0, atol=0)
    # weights for init_weights / a teacher, from a checkpoint with the compile flag on: plain keys
    plain = load_model_weights(create_model("small_cnn", num_classes=10, in_channels=1, width=8), str(path))
    for k, v in plain.state_dict().items():
        assert torch.equal(v, reference["model." + k])


def test_orig_mod_prefix_of_a_torch_compile_wrapper_is_stripped(tmp_path):
    torch.manual_seed(0)
    src = create_model("small_cnn", num_classes=10, in_channels=1, width=8)
    wrapped = torch.compile(src, backend="aot_eager")  # a wrapper module: keys gain "_orig_mod."
    state = wrapped.state_dict()
    assert all(k.startswith("_orig_mod.") for k in state)
    # a raw state dict file (load_model_weights, init_weights=...)
    torch.save(state, tmp_path / "wrapped.pt")
    dst = load_model_weights(create_model("small_cnn", num_classes=10, in_channels=1, width=8),
                             str(tmp_path / "wrapped.pt"))
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v)
    # a Lightning checkpoint whose module held the wrapper (keys "model._orig_mod.*")
    module = Classifier(arch="small_cnn", num_classes=10, in_channels=1, arch_kwargs={"width": 8})
    ckpt = {"state_dict": {f"model.{k}": v for k, v in state.items()}}
    module.on_load_checkpoint(ckpt)
    module.load_state_dict(ckpt["state_dict"])
    for k, v in src.state_dict().items():
        assert torch.equal(module.model.state_dict()[k], v)
    copy.deepcopy(module)  # a module built this way stays copyable (EMA / weight averaging copies it)
