"""Every configs/ch6_*.yaml (thesis tables 6.1-6.10, figures 6.1-6.6) parses and runs a fast_dev_run step.

CIFAR is replaced by stand-in data of its shape; the analysis callbacks are shrunk (a few
Hessian iterations, 4 NTK images) and robust evaluation is left to test_configs.py, so a
step of each of the many rows stays cheap. Fine-tuning configs get freshly saved weights
of their architecture as ``init_weights``.
"""
from __future__ import annotations

import pytest
import torch
import yaml

from helpers import REPO, load_config
from lightning_adv.cli import main
from lightning_adv.models import create_model

CH6 = sorted((REPO / "configs").glob("ch6_*.yaml"))


def test_ch6_configs_cover_the_tables() -> None:
    names = {c.stem for c in CH6}
    text = "".join(c.read_text() for c in CH6)
    for table in ["6.1", "6.2", "6.3", "6.4", "6.5", "6.6", "6.7", "6.8", "6.9", "6.10"]:
        assert f"Thesis table {table}" in text, table
    assert {"ch6_localmin_mlp_cifar10_lemma61", "ch6_normbias_densenet40_cifar10",
            "ch6_normbias_fixup_resnet20_cifar10_normalized", "ch6_rankmax_adv_resnet18_noskip_cifar10",
            "ch6_ntk_wrn_nobn_cifar10"} <= names


#: analysis callbacks that cost CPU minutes on ResNet-size models (SVDs of every layer,
#: double backward): the step runs without them there; they are instantiated from the
#: full config, and exercised in fit on small models by test_properties.py.
HEAVY = {"HessianEigenvalues", "RankProjection", "EffectiveRank", "NTKSnapshot"}


def _is_small(model_args: dict) -> bool:
    kwargs = model_args.get("arch_kwargs") or {}
    return model_args["arch"] in ("mlp", "convnet6") and max(kwargs.get("hidden", [0]) + [kwargs.get("width", 0)]) <= 256


def _instantiate_callbacks(cfg: dict) -> list:
    """Build every callback of the config from its class_path / init_args (checks names and values)."""
    import importlib

    built = []
    for cb in cfg["trainer"].get("callbacks", []) or []:
        module, name = cb["class_path"].rsplit(".", 1)
        built.append(getattr(importlib.import_module(module), name)(**(cb.get("init_args") or {})))
    return built


def _shrink(cfg: dict) -> None:
    kept = []
    small = _is_small(cfg["model"]["init_args"])
    for cb in cfg["trainer"].get("callbacks", []) or []:
        name, args = cb["class_path"].rsplit(".", 1)[-1], cb.setdefault("init_args", {})
        if name == "PGDEvaluation" or (name in HEAVY and not small):
            continue
        if name == "HessianEigenvalues":
            args.update(iterations=3, num_samples=16, batch_size=8)
        if name == "NTKSnapshot":
            args.update(num_samples=4)
        if name == "LocalMinimumInit":
            args.update(linear_max_iter=20)
        kept.append(cb)
    cfg["trainer"]["callbacks"] = kept


@pytest.mark.parametrize("config", CH6, ids=lambda p: p.stem)
def test_ch6_config_runs_fast_dev_run(config, standin_root, tmp_path) -> None:
    raw = load_config(config)
    args_model = raw["model"]["init_args"]
    if args_model.get("init_weights"):  # fine-tuning: weights of the right architecture
        weights = tmp_path / "pretrained.pt"
        torch.save(create_model(args_model["arch"], num_classes=args_model["num_classes"], in_channels=3,
                                **(args_model.get("arch_kwargs") or {})).state_dict(), weights)
        args_model["init_weights"] = str(weights)
    assert len(_instantiate_callbacks(raw)) == len(raw["trainer"].get("callbacks") or [])
    _shrink(raw)
    small = tmp_path / config.name
    small.write_text(yaml.safe_dump(raw))
    args = ["fit", "--config", str(small), "--trainer.fast_dev_run", "1", "--trainer.logger", "false",
            "--trainer.default_root_dir", str(tmp_path), "--trainer.accelerator", "cpu", "--trainer.devices", "1",
            "--trainer.enable_progress_bar", "false", "--data.data_dir", str(standin_root),
            "--data.batch_size", "2", "--data.eval_batch_size", "2", "--data.val_size", "8",
            "--data.num_workers", "0"]
    cli = main(args)
    assert cli.trainer.state.finished and cli.trainer.global_step >= 1
    assert "val/acc" in cli.trainer.callback_metrics
    assert cli.model.hparams.arch == args_model["arch"]
    assert cli.model.hparams.num_classes == cli.datamodule.num_classes
    reg = args_model.get("regularizer")
    if reg:
        assert cli.model.regularizer.mu_squared == reg["init_args"]["mu_squared"]
        assert "train/regularizer" in cli.trainer.callback_metrics


def test_norm_bias_columns_by_command_line_override(standin_root, tmp_path) -> None:
    config = REPO / "configs" / "ch6_normbias_fixup_resnet20_cifar10_normalized.yaml"
    cli = main(["--config", str(config), "--model.init_args.regularizer", "null",
                "--model.init_args.optim.weight_decay", "0.0005", "--data.data_dir", str(standin_root)], run=False)
    assert cli.model.regularizer is None and cli.model.optim_cfg.weight_decay == 0.0005


def test_ntk_width_sweep_script_trains_two_widths_and_plots(standin_root, tmp_path) -> None:
    import json
    import sys

    sys.path.insert(0, str(REPO / "scripts"))
    import ntk_width_sweep

    out = tmp_path / "sweep"
    rc = ntk_width_sweep.main(["--family", "mlp2", "--widths", "4", "16", "--out", str(out), "--",
                               "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
                               "--trainer.limit_val_batches", "1", "--trainer.callbacks.init_args.num_samples", "4",
                               "--trainer.accelerator", "cpu", "--trainer.devices", "1",
                               "--trainer.enable_progress_bar", "false", "--data.data_dir", str(standin_root),
                               "--data.batch_size", "8", "--data.val_size", "8", "--data.num_workers", "0"])
    assert rc == 0
    rows = json.loads((out / "ntk_width_sweep.json").read_text())
    assert [(r["family"], r["width"]) for r in rows] == [("mlp2", 4), ("mlp2", 16)]
    assert rows[0]["num_params"] < rows[1]["num_params"]
    assert all(-1 <= r["correlation"] <= 1 and r["param_rel_change"] > 0 for r in rows)
    assert (out / "ntk_width_sweep.png").stat().st_size > 1000
    from lightning_adv.callbacks import load_ntk_snapshots

    snaps = load_ntk_snapshots(out / "mlp2_w4" / "ntk")  # the overrides reached the NTKSnapshot
    assert [s["epoch"] for s in snaps] == [-1, 0] and snaps[0]["kernel"].shape == (4, 4, 10, 10)
