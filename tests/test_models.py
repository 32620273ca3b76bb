"""Tests of the model zoo, the registry and checkpoint loading (fast, CPU)."""
from __future__ import annotations

import re
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightning_adv.models import (
    MLP,
    MobileNetV2,
    Normalize,
    ResNet18,
    SmallCNN,
    WideResNet,
    create_model,
    list_models,
    load_model_weights,
    model_class,
    model_preset,
    register_model,
)

# name -> (constructor overrides for a fast test, input shape of one example).
# wrn34_10 is exercised through its class with a small depth/width (the preset is
# checked separately), so a forward/backward stays cheap on CPU.
CASES: dict[str, tuple[dict[str, Any], tuple[int, ...]]] = {
    "resnet18": ({}, (3, 32, 32)),
    "resnet18_noskip": ({}, (3, 32, 32)),
    "resnet34": ({}, (3, 32, 32)),
    "mobilenetv2": ({}, (3, 32, 32)),
    "wideresnet": ({"depth": 10, "widen_factor": 1}, (3, 32, 32)),
    "wrn34_10": ({"depth": 10, "widen_factor": 1}, (3, 32, 32)),
    "wideresnet_nobn": ({"depth": 10, "widen_factor": 1}, (3, 32, 32)),
    "wideresnet_noskip": ({"depth": 10, "widen_factor": 1}, (3, 32, 32)),
    "densenet": ({"depth": 10, "growth_rate": 4}, (3, 32, 32)),
    "densenet40": ({"depth": 10, "growth_rate": 4}, (3, 32, 32)),
    "fixup_resnet": ({"depth": 8, "zero_init": False}, (3, 32, 32)),
    "fixup_resnet20": ({"zero_init": False}, (3, 32, 32)),
    "convnet6": ({"width": 4}, (3, 16, 16)),
    "small_cnn": ({}, (1, 8, 8)),
    "mlp": ({"input_size": 28}, (1, 28, 28)),
    "dm_small": ({"input_size": 16}, (1, 16, 16)),
    "dm_medium": ({"input_size": 16}, (1, 16, 16)),
    "dm_large": ({"input_size": 16}, (1, 16, 16)),
    "madry_cnn": ({"input_size": 8}, (1, 8, 8)),
    "r2d2_embedding": ({"channels": (8, 8, 8, 8), "input_size": 32}, (3, 32, 32)),
    "conv4": ({"width": 8, "input_size": 28}, (3, 28, 28)),
    "resnet12": ({"channels": (8, 8, 8, 8), "input_size": 32, "dropblock_size": 2}, (3, 32, 32)),
}

NUM_CLASSES = 7  # not the default 10, so a hard-coded head would show


def _build_small(name: str, **kwargs: Any) -> nn.Module:
    """Build ``name`` for a fast test; presets are bypassed only where CASES says so."""
    overrides, _ = CASES[name]
    preset = model_preset(name)
    if any(k in preset for k in overrides):  # the preset fixes a size we shrink
        return model_class(name)(**{**preset, **overrides, **kwargs})
    return create_model(name, **overrides, **kwargs)


def _rand_input(name: str, batch: int = 4) -> torch.Tensor:
    return torch.rand(batch, *CASES[name][1])


# --------------------------------------------------------------------------------------
# Registry and every registered model
# --------------------------------------------------------------------------------------


def test_registry_lists_the_required_models_and_every_model_has_a_test_case() -> None:
    required = {"resnet18", "resnet18_noskip", "mobilenetv2", "wideresnet", "wrn34_10", "small_cnn", "mlp"}
    assert required <= set(list_models())
    assert set(list_models()) == set(CASES), "add a CASES entry for every registered model"
    assert list_models() == sorted(list_models())


@pytest.mark.parametrize("name", list_models())
def test_forward_shape_and_gradients_for_every_parameter(name: str) -> None:
    torch.manual_seed(0)
    model = _build_small(name, num_classes=NUM_CLASSES)
    model.train()
    x = _rand_input(name).requires_grad_(True)
    x_before = x.detach().clone()
    logits = model(x)
    assert logits.shape == (4, NUM_CLASSES)
    assert torch.isfinite(logits).all()
    assert torch.equal(x.detach(), x_before), "the model modified its input"
    F.cross_entropy(logits, torch.arange(4) % NUM_CLASSES).backward()
    # Every trainable parameter gets a gradient: DDP with find_unused_parameters=False works.
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert no_grad == []
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    # Attacks need the input gradient.
    assert x.grad is not None and x.grad.abs().sum() > 0
    # Eval mode works with a batch of one (BatchNorm uses running statistics).
    model.eval()
    with torch.no_grad():
        assert model(_rand_input(name, batch=1)).shape == (1, NUM_CLASSES)


@pytest.mark.parametrize(
    ("name", "expected"),
    [("resnet18", 11_173_962), ("mobilenetv2", 2_296_922), ("resnet34", 21_282_122)],
)
def test_parameter_counts_of_the_authors_architectures(name: str, expected: int) -> None:
    n = sum(p.numel() for p in create_model(name).parameters())
    assert abs(n - expected) / expected < 0.01, n


def test_wrn34_10_parameter_counts_and_preset() -> None:
    model = create_model("wrn34_10")
    assert isinstance(model, WideResNet) and (model.depth, model.widen_factor) == (34, 10)
    used = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    assert abs(used - 46.16e6) / 46.16e6 < 0.01, used
    assert abs(total - 48.26e6) / 48.26e6 < 0.01, total  # with the unused sub_block1
    model.eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 32, 32)).shape == (1, 10)


def _trades_keys(depth: int, widen_factor: int) -> set[str]:
    """The TRADES WideResNet state-dict keys, written from the TRADES definition."""
    n = (depth - 4) // 6
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    keys = {"conv1.weight", "fc.weight", "fc.bias"} | {f"bn1.{s}" for s in bn}
    for group in ("block1", "sub_block1", "block2", "block3"):
        for i in range(n):
            p = f"{group}.layer.{i}"
            keys |= {f"{p}.bn1.{s}" for s in bn} | {f"{p}.bn2.{s}" for s in bn}
            keys |= {f"{p}.conv1.weight", f"{p}.conv2.weight"}
            if i == 0 and (group in ("block2", "block3") or widen_factor > 1):
                keys.add(f"{p}.convShortcut.weight")  # first block of a group changes width
    return keys


@pytest.mark.parametrize(("depth", "widen_factor"), [(34, 10), (10, 1)])
def test_wideresnet_state_dict_keys_are_trades_keys(depth: int, widen_factor: int) -> None:
    model = WideResNet(depth=depth, widen_factor=widen_factor)
    sd = model.state_dict()
    assert set(sd) == _trades_keys(depth, widen_factor)
    if (depth, widen_factor) == (34, 10):
        assert sd["block1.layer.0.convShortcut.weight"].shape == (160, 16, 1, 1)
        assert sd["block3.layer.4.conv2.weight"].shape == (640, 640, 3, 3)
        assert sd["fc.weight"].shape == (10, 640)


def test_wideresnet_sub_block1_is_unused_and_frozen() -> None:
    torch.manual_seed(0)
    model = WideResNet(depth=10, widen_factor=2).eval()
    x = torch.rand(2, 3, 32, 32)
    before = model(x)
    assert all(not p.requires_grad for p in model.sub_block1.parameters())
    with torch.no_grad():
        for p in model.sub_block1.parameters():
            p.add_(1.0)
    assert torch.equal(model(x), before)


def test_authors_key_names_for_resnet18_and_mobilenetv2() -> None:
    r = ResNet18().state_dict()
    assert {"conv1.weight", "bn1.running_var", "layer2.0.shortcut.0.weight", "layer2.0.shortcut.1.bias",
            "linear.weight"} <= set(r)
    assert not any(k.startswith("layer1.0.shortcut") for k in r)  # identity shortcut: no keys
    m = MobileNetV2().state_dict()
    assert {"conv1.weight", "layers.0.shortcut.0.weight", "layers.1.shortcut.1.running_mean", "conv2.weight",
            "linear.bias"} <= set(m)
    assert not any(k.startswith("layers.2.shortcut") or k.startswith("layers.3.shortcut") for k in m)
    assert m["conv2.weight"].shape == (1280, 320, 1, 1)
    assert len([k for k in m if re.fullmatch(r"layers\.\d+\.conv1\.weight", k)]) == 17


def test_skipless_resnet18_differs_only_by_its_shortcuts() -> None:
    torch.manual_seed(0)
    skip, noskip = create_model("resnet18"), create_model("resnet18_noskip")
    assert isinstance(noskip, ResNet18) and skip.skip and not noskip.skip
    skip_keys, noskip_keys = set(skip.state_dict()), set(noskip.state_dict())
    assert noskip_keys == {k for k in skip_keys if ".shortcut." not in k}
    shortcut_params = sum(p.numel() for n, p in skip.named_parameters() if ".shortcut." in n)
    assert shortcut_params > 0
    assert sum(p.numel() for p in noskip.parameters()) == sum(p.numel() for p in skip.parameters()) - shortcut_params
    # Same shared weights, different function.
    load_model_weights(noskip, {k: v for k, v in skip.state_dict().items() if k in noskip_keys})
    skip.eval(), noskip.eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(skip(x), noskip(x), atol=1e-3)
        # An identity-shortcut block without the skip is exactly the residual branch.
        b_skip, b_noskip = skip.layer1[0], noskip.layer1[0]
        h = torch.randn(2, 64, 8, 8)
        branch = b_noskip.bn2(b_noskip.conv2(F.relu(b_noskip.bn1(b_noskip.conv1(h)))))
        assert torch.allclose(b_noskip(h), F.relu(branch), atol=1e-6)
        assert torch.allclose(b_skip(h), F.relu(branch + h), atol=1e-6)


# --------------------------------------------------------------------------------------
# Normalisation
# --------------------------------------------------------------------------------------


def test_normalize_computes_x_minus_mean_over_std_and_broadcasts() -> None:
    x = torch.rand(2, 3, 5, 5)
    mean, std = [0.1, 0.2, 0.3], [0.5, 0.25, 2.0]
    out = Normalize(mean, std, num_channels=3)(x)
    expected = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert torch.allclose(out, expected)
    single = Normalize([0.5], [0.25], num_channels=3)
    assert single.mean.shape == (1, 3, 1, 1)
    assert torch.allclose(single(x), (x - 0.5) / 0.25)
    identity = Normalize()
    assert identity.is_identity and torch.equal(identity(x), x)


@pytest.mark.parametrize("name", list_models())
def test_normalization_is_the_first_layer_and_not_in_state_dict(name: str) -> None:
    torch.manual_seed(0)
    c = CASES[name][1][0]
    mean, std = [0.3 + 0.1 * i for i in range(c)], [0.2 + 0.05 * i for i in range(c)]
    plain = _build_small(name).eval()
    normed = _build_small(name, mean=mean, std=std).eval()
    assert next(iter(normed.children())) is normed.normalize
    assert isinstance(plain.normalize, Normalize) and plain.normalize.is_identity
    # Non-persistent: identical keys with or without normalisation, so weights move freely.
    assert set(normed.state_dict()) == set(plain.state_dict())
    assert not any("normalize" in k for k in normed.state_dict())
    normed.load_state_dict(plain.state_dict())
    x = _rand_input(name, batch=2)
    m = torch.tensor(mean).view(1, c, 1, 1)
    s = torch.tensor(std).view(1, c, 1, 1)
    # The first weight layer sees exactly (x - mean) / std.
    first = next(mod for mod in normed.modules() if isinstance(mod, (nn.Conv2d, nn.Linear)))
    seen: list[torch.Tensor] = []
    handle = first.register_forward_pre_hook(lambda _mod, args: seen.append(args[0]))
    with torch.no_grad():
        out = normed(x)
    handle.remove()
    assert torch.allclose(seen[0].reshape(x.shape), (x - m) / s, atol=1e-6)
    with torch.no_grad():
        assert torch.allclose(out, plain((x - m) / s), atol=1e-5)
        assert not torch.equal(out, plain(x))


def test_normalization_buffers_follow_dtype_and_device() -> None:
    model = SmallCNN(mean=[0.5], std=[0.25]).double()
    assert model.normalize.mean.dtype == torch.float64
    assert model(torch.rand(2, 1, 8, 8, dtype=torch.float64)).dtype == torch.float64


# --------------------------------------------------------------------------------------
# Argument and input validation
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("factory", "kwargs", "param"),
    [
        (lambda **kw: create_model("resnet18", **kw), {"num_classes": 0}, "num_classes"),
        (lambda **kw: create_model("mobilenetv2", **kw), {"num_classes": 1}, "num_classes"),
        (lambda **kw: WideResNet(depth=10, widen_factor=1, **kw), {"num_classes": 0}, "num_classes"),
        (lambda **kw: SmallCNN(**kw), {"num_classes": -3}, "num_classes"),
        (lambda **kw: MLP(8, **kw), {"num_classes": 0}, "num_classes"),
        (lambda **kw: create_model("resnet18", **kw), {"in_channels": 0}, "in_channels"),
        (lambda **kw: create_model("resnet18", **kw), {"mean": [0.5] * 3, "std": [0.5, 0.0, 0.5]}, "std"),
        (lambda **kw: SmallCNN(**kw), {"mean": [0.5], "std": [-1.0]}, "std"),
        (lambda **kw: create_model("mobilenetv2", **kw), {"mean": [0.5, 0.5], "std": [0.5] * 3}, "mean"),
        (lambda **kw: create_model("resnet18", **kw), {"mean": [0.5] * 3, "std": [0.2] * 4}, "std"),
        (lambda **kw: create_model("resnet18", **kw), {"mean": [0.5] * 3}, "std"),
        (lambda **kw: MLP(8, **kw), {"activation": "swish"}, "activation"),
        (lambda **kw: MLP(8, **kw), {"hidden": (64, 0)}, "hidden"),
        (lambda **kw: MLP(**kw), {"input_size": 0}, "input_size"),
        (lambda **kw: SmallCNN(**kw), {"width": 0}, "width"),
        (lambda **kw: WideResNet(**kw), {"depth": 33}, "depth"),
        (lambda **kw: WideResNet(**kw), {"widen_factor": 0}, "widen_factor"),
        (lambda **kw: WideResNet(**kw), {"drop_rate": 1.5}, "drop_rate"),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_parameter(factory: Any, kwargs: dict[str, Any], param: str) -> None:
    with pytest.raises(ValueError, match=rf"\b{param}\b") as info:
        factory(**kwargs)
    # The message also carries the offending value.
    shown = [str(v) for v in kwargs.values()]
    assert any(s in str(info.value) for s in shown) or "got" in str(info.value)


def test_bad_inputs_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match="input_size=8"):
        MLP(8)(torch.rand(2, 1, 28, 28))
    with pytest.raises(ValueError, match="32x32"):
        WideResNet(depth=10, widen_factor=1)(torch.rand(2, 3, 64, 64))
    with pytest.raises(ValueError, match="in_channels=3"):
        create_model("resnet18")(torch.rand(2, 1, 32, 32))
    with pytest.raises(ValueError, match="unsqueeze"):
        SmallCNN()(torch.rand(1, 8, 8))


# --------------------------------------------------------------------------------------
# Registry errors
# --------------------------------------------------------------------------------------


def test_unknown_model_name_lists_available_models() -> None:
    with pytest.raises(ValueError, match="unknown model 'foo'") as info:
        create_model("foo")
    msg = str(info.value)
    assert "`arch`" in msg and all(name in msg for name in list_models())
    with pytest.raises(ValueError, match="available"):
        model_class("foo")


def test_create_model_rejects_unknown_and_contradicting_arguments() -> None:
    with pytest.raises(ValueError, match="widht"):
        create_model("resnet18", widht=3)
    with pytest.raises(ValueError, match="depth") as info:
        create_model("wrn34_10", depth=28)
    assert "wideresnet" in str(info.value)
    # Restating a preset value is fine.
    assert create_model("resnet18_noskip", skip=False, num_classes=3).linear.out_features == 3


def test_register_model_refuses_to_rebind_a_name() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_model("resnet18")(MobileNetV2)
    with pytest.raises(ValueError, match="no_such_arg"):
        register_model("test_bad_preset", no_such_arg=1)(SmallCNN)
    assert "test_bad_preset" not in list_models()


# --------------------------------------------------------------------------------------
# load_model_weights
# --------------------------------------------------------------------------------------


def _small_wrn(seed: int, **kwargs: Any) -> WideResNet:
    torch.manual_seed(seed)
    return WideResNet(depth=10, widen_factor=2, **kwargs)


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_load_model_weights_round_trip_through_a_file(tmp_path: Any) -> None:
    src, dst = _small_wrn(0), _small_wrn(1)
    src.train()(torch.rand(4, 3, 32, 32))  # move BN running statistics away from init
    assert not _same_weights(src, dst)
    path = tmp_path / "wrn.pt"
    torch.save(src.state_dict(), path)
    assert load_model_weights(dst, path) is dst
    assert _same_weights(src, dst)
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(src.eval()(x), dst.eval()(x))


@pytest.mark.parametrize(
    "wrap",
    [
        pytest.param(lambda sd: {f"module.{k}": v for k, v in sd.items()}, id="trades-dataparallel"),
        pytest.param(lambda sd: {"net": sd, "epoch": 3}, id="ard-net"),
        pytest.param(lambda sd: {"model": {f"module.{k}": v for k, v in sd.items()}}, id="model-module"),
        pytest.param(
            lambda sd: {
                "state_dict": {**{f"model.{k}": v for k, v in sd.items()}, "teacher.fc.weight": torch.zeros(3, 3)},
                "epoch": 7,
                "global_step": 100,
                "hyper_parameters": {"lr": 0.1, "arch": "wideresnet"},
            },
            id="lightning",
        ),
    ],
)
def test_load_model_weights_accepts_common_checkpoint_layouts(wrap: Any, tmp_path: Any) -> None:
    src, dst = _small_wrn(0), _small_wrn(1)
    path = tmp_path / "ckpt.pt"
    torch.save(wrap(src.state_dict()), path)
    load_model_weights(dst, path)
    assert _same_weights(src, dst)


def test_load_model_weights_key_prefix_and_old_checkpoints_without_num_batches_tracked() -> None:
    src, dst = _small_wrn(0), _small_wrn(1)
    sd = {f"student.{k}": v for k, v in src.state_dict().items() if not k.endswith("num_batches_tracked")}
    load_model_weights(dst, {"state_dict": sd}, key_prefix="student.")
    assert all(torch.equal(v, dst.state_dict()[k]) for k, v in src.state_dict().items() if "num_batches" not in k)


def test_load_model_weights_wrong_architecture_names_the_expected_one() -> None:
    with pytest.raises(ValueError, match="MobileNetV2") as info:
        load_model_weights(MobileNetV2(), ResNet18().state_dict())
    msg = str(info.value)
    assert "missing" in msg and "unexpected" in msg and "layers.0.conv1.weight" in msg


def test_load_model_weights_wrong_num_classes_reports_the_shape() -> None:
    with pytest.raises(ValueError, match=r"fc\.weight.*\(100, 128\).*\(10, 128\)"):
        load_model_weights(_small_wrn(1), _small_wrn(0, num_classes=100).state_dict())


def test_load_model_weights_missing_file(tmp_path: Any) -> None:
    path = tmp_path / "nope" / "teacher.pt"
    with pytest.raises(FileNotFoundError, match=re.escape(str(path))):
        load_model_weights(SmallCNN(), path)


class _Payload:
    """A custom object: unpickling it would need code, which weights_only=True refuses."""


def test_load_model_weights_never_unpickles_arbitrary_objects(tmp_path: Any) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": SmallCNN().state_dict(), "extra": _Payload()}, path)
    with pytest.raises(ValueError, match="weights_only=True"):
        load_model_weights(SmallCNN(), path)


def test_load_model_weights_non_strict_loads_the_matching_subset() -> None:
    torch.manual_seed(0)
    src = SmallCNN(num_classes=10)
    dst = SmallCNN(num_classes=10)
    sd = {k: v for k, v in src.state_dict().items() if k.startswith("features.")}
    with pytest.raises(ValueError, match="missing"):
        load_model_weights(dst, sd)
    with pytest.warns(UserWarning, match="classifier"):
        load_model_weights(dst, {**sd, "extra.weight": torch.zeros(1)}, strict=False)
    assert torch.equal(dst.features[0].weight, src.features[0].weight)
    assert not torch.equal(dst.classifier[0].weight, src.classifier[0].weight)


# --------------------------------------------------------------------------------------
# torch.func compatibility
# --------------------------------------------------------------------------------------


def test_torch_func_per_sample_gradients_match_a_loop() -> None:
    from torch.func import functional_call, grad, vmap

    torch.manual_seed(0)
    model = SmallCNN(width=4, mean=[0.5], std=[0.25])
    params = {k: v.detach() for k, v in model.named_parameters()}
    x, y = torch.rand(3, 1, 8, 8), torch.tensor([0, 1, 2])

    def loss(p: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(functional_call(model, p, (xi.unsqueeze(0),)), yi.unsqueeze(0))

    per_sample = vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)
    for i in range(3):
        ref = torch.autograd.grad(loss(dict(model.named_parameters()), x[i], y[i]), list(model.parameters()))
        for (name, g), r in zip(per_sample.items(), ref):
            assert torch.allclose(g[i], r, atol=1e-6), name


def test_torch_func_functional_call_with_batchnorm_in_eval_mode() -> None:
    from torch.func import functional_call, jacrev

    torch.manual_seed(0)
    model = WideResNet(depth=10, widen_factor=1, num_classes=3).eval()
    state = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    x = torch.rand(1, 3, 32, 32)
    assert torch.allclose(functional_call(model, state, (x,)), model(x))
    jac = jacrev(lambda inp: functional_call(model, state, (inp,)))(x)
    assert jac.shape == (1, 3, 1, 3, 32, 32) and jac.abs().sum() > 0
