"""Every few-shot config (configs/aq_*.yaml) parses and runs a fast_dev_run step through train.py's CLI.

Data that needs a download is replaced by generated stand-ins in the real on-disk formats
(learn2learn's pickles / folders, torchvision's Omniglot tree); tasks are shrunk to 5-way
1-shot 1-query at 32x32, the attacks to one step and the R2-D2 / ResNet-12 widths to 8 channels
(their real sizes are checked in test_fewshot.py), so 30 configs stay within seconds.
"""
from __future__ import annotations

import json
import warnings

import pytest
import torch

from helpers import REPO, load_config
from lightning_adv.datamodules.fewshot_standins import write_fewshot_standin
from lightning_adv.cli import main

warnings.filterwarnings("ignore", category=UserWarning)
AQ_CONFIGS = sorted((REPO / "configs").glob("aq_*.yaml"))
STANDIN = {"MiniImageNetFewShot": "mini-imagenet", "CIFARFSFewShot": "cifar-fs", "FC100FewShot": "fc100",
           "OmniglotFewShot": "omniglot"}
TINY = ["--data.shots", "1", "--data.queries", "1", "--data.tasks_per_batch", "1", "--data.val_shots", "1",
        "--data.test_shots", "1", "--data.test_queries", "1", "--data.val_episodes", "1", "--data.test_episodes", "1"]


@pytest.fixture(scope="module")
def aq_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("aq_standins")
    for name in STANDIN.values():
        write_fewshot_standin(root / name, name, classes=(8, 6, 6), per_class=3)
    return root


def test_configs_cover_the_chapter_5_tables():
    text = "\n".join(p.read_text() for p in AQ_CONFIGS)
    for table in ["5.1", "5.2", "5.3", "5.4", "5.5", "5.6", "5.7", "5.8", "5.9", "5.10", "5.11"]:
        assert f"table {table}" in text or f"tables {table}" in text or f" {table}," in text or f" {table})" in text
    names = {p.name for p in AQ_CONFIGS}
    assert {"aq_omniglot_minimal.yaml", "aq_r2d2_cifarfs_5shot.yaml", "aq_pretrain_r2d2_mini.yaml"} <= names


def _args(config, raw, root, tmp_path):
    args = ["fit", "--config", str(config), "--trainer.fast_dev_run", "1", "--trainer.logger", "false",
            "--trainer.default_root_dir", str(tmp_path), "--trainer.accelerator", "cpu", "--trainer.devices", "1",
            "--trainer.enable_progress_bar", "false"]
    data_cls = raw["data"]["class_path"].rsplit(".", 1)[1]
    if data_cls == "MetaTrainClassification":
        inner = raw["data"]["init_args"]["episodes"]["class_path"].rsplit(".", 1)[1]
        return args + ["--data.episodes.init_args.data_dir", str(root / STANDIN[inner]),
                       "--data.episodes.init_args.num_workers", "0", "--data.batch_size", "4",
                       "--data.val_per_class", "1", "--model.objective.init_args.attack.steps", "1",
                       "--model.num_classes", "8",
                       "--model.arch_kwargs", json.dumps({"input_size": 32, "channels": [8, 8, 8, 8]}),
                       "--data.episodes.init_args.image_size", "32"]
    args += TINY + ["--model.eval_attack.steps", "1"]
    if "attack" in (raw["model"]["init_args"]["objective"].get("init_args") or {}):
        args += ["--model.objective.init_args.attack.steps", "1"]
    if data_cls in STANDIN:
        args += ["--data.data_dir", str(root / STANDIN[data_cls])]
    elif data_cls == "ClassFolderFewShot":  # the vendored Omniglot zips are extracted here, not into the repo
        args += ["--data.data_dir", str(tmp_path / "class_folder")]
    if data_cls == "MiniImageNetFewShot":  # 84x84 -> 32x32 (through the resize path) keeps CPU time low
        args += ["--data.image_size", "32", "--model.image_size", "32"]
    if data_cls != "ClassFolderFewShot" and data_cls != "OmniglotFewShot":
        args += ["--data.num_workers", "0"]
    if data_cls == "OmniglotFewShot":
        args += ["--data.val_classes", "6"]
    if raw["model"]["init_args"]["learner"]["class_path"].endswith("MAML"):
        args += ["--model.learner.init_args.steps", "1"]
    return args + _narrow(raw)


def _narrow(raw):
    """Thin versions of the authors' wide backbones (their full sizes are tested in test_fewshot.py)."""
    init = raw["model"]["init_args"]
    kwargs = dict(init.get("arch_kwargs") or {})
    if init["arch"] in ("r2d2_embedding", "resnet12"):
        kwargs["channels"] = [8, 8, 8, 8]
        return ["--model.arch_kwargs", json.dumps(kwargs)]
    return []


@pytest.mark.parametrize("config", AQ_CONFIGS, ids=lambda p: p.stem)
def test_aq_config_runs_fast_dev_run(config, aq_root, tmp_path):
    raw = load_config(config)
    torch.set_num_threads(1)
    cli = main(_args(config, raw, aq_root, tmp_path))
    trainer = cli.trainer
    assert trainer.state.finished and trainer.global_step >= 1
    metrics = trainer.callback_metrics
    assert "val/acc" in metrics and "val/robust_acc" in metrics
    init = raw["model"]["init_args"]
    hp = cli.model.hparams
    assert hp.arch == init["arch"]
    if "learner" in init:
        # hyperparameters store the parts as {class_path, init_args}
        assert hp.learner["class_path"].rsplit(".", 1)[1] == init["learner"]["class_path"].rsplit(".", 1)[1]
        assert hp.objective["class_path"].rsplit(".", 1)[1] == init["objective"]["class_path"].rsplit(".", 1)[1]
        if "attack" in hp.objective["init_args"]:
            assert hp.objective["init_args"]["attack"]["init_args"]["steps"] == 1
        assert hp.eval_attack["init_args"]["eps"] == pytest.approx(init["eval_attack"]["eps"])


def test_transfer_config_tests_pretrained_backbone_weights(aq_root, tmp_path):
    """Table 5.4: an adversarially pre-trained backbone (with classifier) evaluated few-shot, no meta-training."""
    from lightning_adv.models import create_model

    pretrained = create_model("r2d2_embedding", in_channels=3, num_classes=8, input_size=32)
    weights = tmp_path / "pretrained.pt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in pretrained.state_dict().items()}}, weights)
    config = REPO / "configs" / "aq_transfer_r2d2_mini_5shot.yaml"
    args = ["test", "--config", str(config), "--model.init_weights", str(weights), "--trainer.logger", "false",
            "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.enable_progress_bar", "false",
            "--trainer.default_root_dir", str(tmp_path), "--data.data_dir", str(aq_root / "mini-imagenet"),
            "--data.num_workers", "0", "--model.eval_attack.steps", "1", "--data.image_size", "32",
            "--model.image_size", "32"] + TINY
    cli = main(args)
    block = cli.model.backbone.block1[0].weight
    torch.testing.assert_close(block, pretrained.block1[0].weight)
    assert "test/robust_acc" in cli.trainer.callback_metrics
