"""The pre-processing defense configs through train.py's CLI (thesis 5.5, table 5.12).

purifier_* (training) run a fast_dev_run fit: the Omniglot ones on the vendored minimal splits, the
CIFAR ones on a CIFAR-100 stand-in in torchvision's format with narrowed models. eval_purified_omniglot
and eval_table5_12_cifarfs run ``test`` with the attack suite on tiny checkpoints written here (the
real ones come from the training configs), so both report rows and the clean accuracy come out.
"""
from __future__ import annotations

import json
import warnings

import pytest
import torch

from lightning_adv.callbacks import AttackSuiteEvaluation
from helpers import REPO, PURIFIER_PREFIXES
from lightning_adv.datamodules.fewshot_standins import write_fewshot_standin
from lightning_adv.cli import main
from lightning_adv.modules import AdversarialQuerying, GANTraining, SRTraining
from lightning_adv.meta import HeadLearner
from lightning_adv.objectives import MetaNatural

warnings.filterwarnings("ignore", category=UserWarning)
PURIFIER_CONFIGS = sorted(p for p in (REPO / "configs").glob("*.yaml") if p.name.startswith(PURIFIER_PREFIXES))
COMMON = ["--trainer.logger", "false", "--trainer.accelerator", "cpu", "--trainer.devices", "1",
          "--trainer.enable_progress_bar", "false"]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def test_purifier_configs_cover_both_defenses_on_both_data_sets():
    names = {p.name for p in PURIFIER_CONFIGS}
    assert names == {"purifier_defensegan_omniglot.yaml", "purifier_sr_omniglot.yaml",
                     "purifier_defensegan_cifarfs.yaml", "purifier_sr_cifarfs.yaml"}
    table = (REPO / "configs" / "eval_table5_12_cifarfs.yaml").read_text()
    for target in ("83.30%", "69.25% / 44.80%", "35.15% / 23.00%", "35.15% / 28.05%"):
        assert target in table


@pytest.mark.parametrize("config", PURIFIER_CONFIGS, ids=lambda p: p.stem)
def test_purifier_config_fits_one_step(config, standin_root, omni_dir, tmp_path):
    args = ["fit", "--config", str(config), "--trainer.fast_dev_run", "1", "--trainer.default_root_dir", str(tmp_path),
            *COMMON]
    gan = "defensegan" in config.name
    if "cifarfs" in config.name:  # CIFAR-100 stand-in, narrow models
        args += ["--data.data_dir", str(standin_root), "--data.batch_size", "4", "--data.val_size", "8",
                 "--data.num_workers", "0"]
        args += (["--model.gen_width", "8", "--model.critic_width", "8", "--model.latent_dim", "8",
                  "--model.val_steps", "2"] if gan else ["--model.sr_width", "8", "--model.sr_blocks", "1"])
    else:  # the vendored Omniglot zips are extracted under tmp_path, not into the repo
        args += ["--data.episodes.init_args.data_dir", str(omni_dir), "--data.batch_size", "8"]
        args += ["--model.val_steps", "5"] if gan else []
    cli = main(args)
    assert cli.trainer.state.finished and cli.trainer.global_step >= 1
    assert ("val/rec_mse" if gan else "val/mse") in cli.trainer.callback_metrics
    assert isinstance(cli.model, GANTraining if gan else SRTraining)


@pytest.fixture(scope="module")
def omni_dir(tmp_path_factory):
    """One extraction of the vendored Omniglot zips for the whole module."""
    return tmp_path_factory.mktemp("omni")


def _save(module, path) -> str:
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    return str(path)


def _checkpoints(root, size: int, channels: int, arch: str, arch_kwargs: dict, head: str) -> dict:
    torch.manual_seed(0)
    fs = AdversarialQuerying(arch=arch, in_channels=channels, image_size=size, arch_kwargs=arch_kwargs,
                             learner=HeadLearner(head), objective=MetaNatural())
    gan = GANTraining(image_size=size, in_channels=channels, latent_dim=4, gen_width=4, critic_width=4)
    sr = SRTraining(image_size=size, in_channels=channels, sr_width=4, sr_blocks=1)
    return {"fewshot": _save(fs, root / "fs.ckpt"), "defensegan": _save(gan, root / "gan.ckpt"),
            "sr": _save(sr, root / "sr.ckpt")}


def _run_eval(config: str, ckpts: dict, purifier: str, extra: list[str], tmp_path) -> None:
    purifier_ckpt = ckpts[purifier] if purifier != "none" else "null"
    args = ["test", "--config", str(REPO / "configs" / config), "--trainer.default_root_dir", str(tmp_path), *COMMON,
            "--model.fewshot_checkpoint", ckpts["fewshot"], "--model.purifier", purifier,
            "--model.purifier_checkpoint", purifier_ckpt, "--model.restarts", "1", "--model.steps", "2",
            "--trainer.callbacks.init_args.output_dir", str(tmp_path / "report"), *extra]
    cli = main(args)
    suite = next(cb for cb in cli.trainer.callbacks if isinstance(cb, AttackSuiteEvaluation))
    report = json.loads((tmp_path / "report" / f"{suite.filename}.json").read_text())
    names = [r["name"] for r in report["rows"]]
    assert len(names) == 2 and names[0].endswith("_unaware") and "bpda_eot" in names[1], names
    assert report["n"] >= 5
    assert "test/acc" in cli.trainer.callback_metrics


@pytest.mark.parametrize("purifier", ["defensegan", "sr", "none"])
def test_eval_purified_omniglot_reports_both_ways(purifier, omni_dir, tmp_path):
    ckpts = _checkpoints(tmp_path, 28, 1, "conv4", {"width": 4}, "protonet")
    _run_eval("eval_purified_omniglot.yaml", ckpts, purifier,
              ["--data.data_dir", str(omni_dir), "--data.test_episodes", "1", "--data.test_queries", "1"],
              tmp_path)


def test_eval_table5_12_runs_on_a_cifarfs_standin(tmp_path):
    root = tmp_path / "cifar-fs"
    write_fewshot_standin(root, "cifar-fs", classes=(8, 6, 6), per_class=3)
    ckpts = _checkpoints(tmp_path, 32, 3, "r2d2_embedding", {"channels": [8, 8, 8, 8]}, "r2d2")
    _run_eval("eval_table5_12_cifarfs.yaml", ckpts, "defensegan",
              ["--data.data_dir", str(root), "--data.test_episodes", "1", "--data.test_queries", "1",
               "--data.test_shots", "1", "--data.num_workers", "0", "--trainer.accelerator", "cpu"], tmp_path)
