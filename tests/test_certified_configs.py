"""The certified-training and smoothing configs run a fast_dev_run step through train.py's CLI (stand-in
data for MNIST / Fashion-MNIST / CIFAR); the certified and smoothing add-ons run under `test`."""
from __future__ import annotations

import pytest

from lightning_adv.callbacks import AttackSuiteEvaluation, SmoothingCertification
from helpers import CERTIFIED_PREFIXES, REPO, load_config
from lightning_adv.cli import main

CONFIGS = sorted(p for p in (REPO / "configs").glob("*.yaml") if p.name.startswith(CERTIFIED_PREFIXES))
COMMON = ["--trainer.logger", "false", "--trainer.accelerator", "cpu", "--trainer.devices", "1",
          "--trainer.enable_progress_bar", "false"]


def _data_args(raw: dict, root) -> list[str]:
    if "Digits" in raw["data"]["class_path"]:
        return []
    large = raw["model"]["init_args"].get("arch") == "dm_large"  # 13M parameters: one validation example
    return ["--data.data_dir", str(root), "--data.batch_size", "4", "--data.eval_batch_size", "1" if large else "4",
            "--data.val_size", "8", "--data.num_workers", "0"]


def test_certified_configs_exist():
    names = {c.name for c in CONFIGS}
    assert {"certified_ibp_digits.yaml", "certified_crownibp_fashion_mnist.yaml", "certified_ibp_mnist_eps01.yaml",
            "certified_ibp_mnist_eps03.yaml", "certified_crownibp_cifar10.yaml", "smoothing_digits.yaml",
            "smoothing_cifar10.yaml", "certified_ibp_mnist_eps01_cpu.yaml", "certified_ibp_mnist_eps03_cpu.yaml",
            "certified_crownibp_mnist_eps01.yaml", "certified_crownibp_mnist_eps03.yaml"} <= names


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_certified_config_runs_fast_dev_run(config, standin_root, tmp_path):
    raw = load_config(config)
    cli = main(["fit", "--config", str(config), "--trainer.fast_dev_run", "1", "--trainer.default_root_dir",
                str(tmp_path), *COMMON, *_data_args(raw, standin_root)])
    assert cli.trainer.state.finished and cli.trainer.global_step >= 1
    metrics = cli.trainer.callback_metrics
    assert "val/acc" in metrics and "val/robust_acc" in metrics
    if config.name.startswith("certified_"):
        assert 0 <= float(metrics["val/certified_acc"]) <= 1
        want = raw["model"]["init_args"]["objective"]
        assert cli.model.hparams.objective["class_path"].endswith(want["class_path"].rsplit(".", 1)[-1])
        assert cli.model.objective.eps == pytest.approx(want["init_args"]["eps"])
        assert "train/certified_acc" in metrics and "train/eps" in metrics
    else:
        assert cli.model.noise_sigma == raw["model"]["init_args"]["noise_sigma"]


@pytest.mark.parametrize(("train", "addon"), [("certified_ibp_digits.yaml", "eval_certified.yaml"),
                                              ("certified_crownibp_cifar10.yaml", "eval_certified_cifar10.yaml"),
                                              ("certified_ibp_mnist_eps01_cpu.yaml", "eval_certified_mnist_eps01.yaml"),
                                              ("smoothing_digits.yaml", "eval_smoothing.yaml")])
def test_certified_addons_under_test(train, addon, standin_root, tmp_path):
    raw = load_config(REPO / "configs" / train)
    args = ["test", "--config", str(REPO / "configs" / train), "--config", str(REPO / "configs" / addon),
            "--trainer.limit_test_batches", "1", "--trainer.default_root_dir", str(tmp_path), *COMMON,
            *_data_args(raw, standin_root)]
    if "Digits" in raw["data"]["class_path"]:
        args += ["--data.eval_batch_size", "8"]
    if addon == "eval_smoothing.yaml":
        args += ["--trainer.callbacks.init_args.n", "200", "--trainer.callbacks.init_args.n0", "20"]
    if addon == "eval_certified_cifar10.yaml":  # AutoAttack is covered elsewhere; keep the PGD and certified rows
        args += ["--model.arch_kwargs", "{width: 2}"]
    if addon == "eval_certified_mnist_eps01.yaml":  # full CROWN on dm_small's 8.6k random neurons takes a minute:
        args += ["--model.arch", "mlp", "--model.arch_kwargs", "{input_size: 28, hidden: [16]}"]  # the add-on's rows
    cli = main(args)
    cbs = [c for c in cli.trainer.callbacks if isinstance(c, (AttackSuiteEvaluation, SmoothingCertification))]
    assert cbs
    if isinstance(cbs[0], AttackSuiteEvaluation):
        report = cbs[0].report
        rows = {r.name: r for r in report.rows}
        certified = [r for r in report.rows if r.kind == "certified"]
        assert certified and report.n >= 4
        assert not [f for f in report.flags if f.check == "certified_but_broken"]
        attacks = [r for r in report.rows if r.kind != "certified"]
        assert all(c.robust_acc <= min(a.robust_acc for a in attacks) for c in certified)
        assert set(rows) >= {"certified_ibp", "certified_crownibp"}
    else:
        assert "test/smoothing/certified_acc@0.5" in cli.trainer.callback_metrics
