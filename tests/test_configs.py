"""Every config in configs/ parses, instantiates and runs a fast_dev_run step through train.py's CLI."""
from __future__ import annotations

import pytest

from helpers import CONFIGS, load_config
from lightning_adv.cli import main


def test_configs_exist_for_the_thesis_experiments():
    names = {c.name for c in CONFIGS}
    for required in ["quickstart.yaml", "natural_resnet18_cifar10.yaml", "at_resnet18_cifar10.yaml",
                     "at_mobilenetv2_cifar10.yaml", "at_mobilenetv2_cifar100.yaml", "trades_wrn34_10_cifar10.yaml",
                     "free_mobilenetv2_cifar10_m4.yaml", "free_mobilenetv2_cifar10_m8.yaml"]:
        assert required in names


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_config_runs_fast_dev_run(config, standin_root, tmp_path):
    raw = load_config(config)
    args = ["fit", "--config", str(config), "--trainer.fast_dev_run", "1", "--trainer.logger", "false",
            "--trainer.default_root_dir", str(tmp_path), "--trainer.accelerator", "cpu", "--trainer.devices", "1",
            "--trainer.enable_progress_bar", "false"]
    if "CIFAR" in raw["data"]["class_path"]:
        # stand-in data of CIFAR's shape; tiny batches keep WRN-34-10 affordable on CPU
        args += ["--data.data_dir", str(standin_root), "--data.batch_size", "2", "--data.eval_batch_size", "2",
                 "--data.val_size", "8", "--data.num_workers", "0"]
    elif "MNIST" in raw["data"]["class_path"]:  # the stand-in of MNIST's files (madry_at_mnist.yaml)
        args += ["--data.data_dir", str(standin_root), "--data.batch_size", "4", "--data.eval_batch_size", "4",
                 "--data.val_size", "8"]
    if raw["model"]["init_args"].get("arch") == "wrn34_10":
        # WideResNet-34-10 (46M parameters) at 32x32 costs ~13 GFLOP a forward on the CPU: the config's attacks
        # run 1 PGD step instead of 10 (training) and 20 (validation); the same code paths run, and the
        # configured step counts are checked below
        args += ["--model.objective.init_args.attack.steps", "1", "--trainer.callbacks.init_args.attacks",
                 '[{"eps": 0.0313725490196078, "steps": 1, "step_size": 0.0078431372549019, "name": "pgd20_eps8"}]']
    cli = main(args)
    trainer = cli.trainer
    assert trainer.state.finished
    assert trainer.global_step >= 1
    metrics = trainer.callback_metrics
    assert "val/acc" in metrics
    assert "val/robust_acc" in metrics  # every config evaluates robustness
    module_cfg = raw["model"]["init_args"]
    assert cli.model.hparams.arch == module_cfg["arch"]
    assert cli.model.hparams.num_classes == cli.datamodule.num_classes
    if module_cfg.get("arch") == "wrn34_10":
        attack = load_config(config)["model"]["init_args"]["objective"]["init_args"]["attack"]
        assert attack["steps"] == 10 and cli.model.objective.attack.steps == 1
