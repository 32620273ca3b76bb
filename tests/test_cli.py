"""train.py's CLI end to end: validate/test subcommands, bad input, crash and resume."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from helpers import REPO, cli_args
from lightning_adv.cli import main

@pytest.fixture(scope="module")
def quick_ckpt(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("quick")
    main(cli_args(tmp, "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "5"))
    ckpt = tmp / "checkpoints" / "last.ckpt"
    assert ckpt.exists()
    assert any(p.name.startswith("best-") for p in (tmp / "checkpoints").iterdir())
    return ckpt


@pytest.mark.parametrize("inference_mode", ["false", "true"])
def test_validate_and_test_compute_robust_accuracy(quick_ckpt, tmp_path, inference_mode):
    for sub, stage in (("validate", "val"), ("test", "test")):
        cli = main(cli_args(tmp_path, "--ckpt_path", str(quick_ckpt), "--trainer.inference_mode", inference_mode,
                            sub=sub))
        m = cli.trainer.callback_metrics
        for key in (f"{stage}/acc", f"{stage}/robust_acc", f"{stage}/robust_acc/pgd20",
                    f"{stage}/robust_acc/fgsm"):
            assert key in m, (key, sorted(m))
        assert 0 <= m[f"{stage}/robust_acc"] <= m[f"{stage}/robust_acc/fgsm"] + 1e-6
        assert m[f"{stage}/robust_acc/pgd20"] <= m[f"{stage}/acc"] + 1e-6


# (override, text the error must contain): each is rejected before any training step
BAD_INPUTS = [
    (["--model.objective.init_args.attack.eps", "-0.1"], "eps"),
    (["--model.objective.init_args.attack.eps", "2.0"], "eps"),
    (["--model.objective.init_args.attack.steps", "-1"], "steps"),
    (["--model.objective.init_args.attack.step_size", "0"], "step_size"),
    (["--model.objective.init_args.attack.restarts", "0"], "restarts"),
    (["--model.objective.init_args.attack.norm", "l3"], "norm"),
    (["--model.objective.init_args.attack.bn_mode", "frozen"], "bn_mode"),
    (["--model.arch", "resnet99"], "arch"),
    (["--model.objective", "lightning_adv.objectives.KD"], "KnowledgeDistillation"),
    (["--model.objective", "lightning_adv.objectives.Free", "--model.objective.init_args.replays", "0"], "replays"),
    (["--model.objective", "lightning_adv.objectives.TRADES", "--model.objective.init_args.beta", "-1"], "beta"),
    (["--model.optim.lr", "0"], "lr"),
    (["--model.optim.momentum", "1.5"], "momentum"),
    (["--model.optim.milestones", "[5, 3]"], "milestones"),
    (["--model.optim.optimizer", "lbfgs"], "optimizer"),
    (["--model.std", "[0.0]"], "std"),
    (["--model.num_classes", "100"], "num_classes"),
    (["--model.in_channels", "3"], "in_channels"),
    (["--data.batch_size", "0"], "batch_size"),
    (["--data.val_size", "-1"], "val_size"),
    (["--data.num_workers", "-2"], "num_workers"),
]


class _NoTraining(Callback):
    def on_train_batch_start(self, *args, **kwargs):  # pragma: no cover - must never run
        raise AssertionError("training started despite a bad configuration")


@pytest.mark.parametrize("override,param", BAD_INPUTS, ids=[" ".join(o) for o, _ in BAD_INPUTS])
def test_bad_input_is_rejected_before_training(override, param, tmp_path):
    with pytest.raises(ValueError) as info:
        cli = main(cli_args(tmp_path, "--trainer.max_epochs", "1", *override, sub=None), run=False)
        cli.trainer.callbacks.append(_NoTraining())
        cli.trainer.fit(cli.model, cli.datamodule)
    assert param in str(info.value)
    assert not (tmp_path / "checkpoints").exists()


def test_missing_data_with_download_off_names_the_place(tmp_path):
    from lightning_adv.datamodules import DataNotFoundError

    cfg = str(REPO / "configs" / "at_resnet18_cifar10.yaml")
    empty = tmp_path / "nothing-here"
    with pytest.raises(DataNotFoundError) as info:
        main(["fit", "--config", cfg, "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path),
              "--data.data_dir", str(empty), "--data.download", "false", "--trainer.accelerator", "cpu"])
    msg = str(info.value)
    assert str(empty) in msg and "download" in msg


class _CrashAt(Callback):
    def __init__(self, batch: int):
        self.batch = batch

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.fit_loop.epoch_loop.total_batch_idx == self.batch:
            raise RuntimeError("simulated crash")


class _CheckRestored(Callback):
    """At the start of the resumed fit, compare everything with the saved checkpoint."""

    def __init__(self, ckpt: dict):
        self.ckpt = ckpt
        self.checked = False

    def on_train_start(self, trainer, module):
        saved = self.ckpt
        state = module.state_dict()
        assert set(state) == set(saved["state_dict"])
        for k, v in saved["state_dict"].items():
            assert torch.equal(state[k].cpu(), v), k
        opt_now = trainer.optimizers[0].state_dict()
        opt_saved = saved["optimizer_states"][0]
        assert opt_now["param_groups"][0]["lr"] == opt_saved["param_groups"][0]["lr"]
        assert opt_saved["state"]  # the optimiser had state to restore (SGD momentum)
        for idx, st in opt_saved["state"].items():
            assert set(opt_now["state"][idx]) == set(st)
            for key, value in st.items():
                assert torch.equal(torch.as_tensor(opt_now["state"][idx][key]).cpu(), torch.as_tensor(value)), key
        assert trainer.global_step == saved["global_step"]
        assert trainer.current_epoch == saved["epoch"]
        assert torch.equal(module.free.delta.cpu(), saved["free_delta"][0])
        sched_now = trainer.lr_scheduler_configs[0].scheduler.state_dict()
        assert sched_now["last_epoch"] == saved["lr_schedulers"][0]["last_epoch"]
        self.checked = True
        self.params_at_start = [p.detach().clone() for p in module.parameters()]


def test_crash_and_resume_from_last_checkpoint(tmp_path):
    # free training uses only the ball of the attack: the quickstart's PGD-5 settings go back to the defaults
    free = tmp_path / "free.yaml"
    free.write_text("model:\n  init_args:\n    objective:\n      class_path: lightning_adv.objectives.Free\n"
                    "      init_args: {eps: 0.15, replays: 2}\n")
    args = cli_args(tmp_path, "--config", str(free),
                    "--trainer.max_epochs", "3",
                    "--trainer.limit_train_batches", "6", "--trainer.limit_val_batches", "1",
                    "--checkpoint.every_n_train_steps", "4", "--model.optim.optimizer", "sgd",
                    "--model.optim.lr", "0.05", "--model.optim.scheduler", "multistep",
                    "--model.optim.milestones", "[1]", sub=None)
    cli = main(args, run=False)
    cli.trainer.callbacks.append(_CrashAt(batch=9))  # epoch 1, after a mid-epoch checkpoint
    with pytest.raises(RuntimeError, match="simulated crash"):
        cli.trainer.fit(cli.model, cli.datamodule)
    last = tmp_path / "checkpoints" / "last.ckpt"
    saved = torch.load(last, map_location="cpu", weights_only=True)
    assert 0 < saved["global_step"] < 18  # saved mid-run, before the crash

    cli2 = main(args, run=False)
    check = _CheckRestored(saved)
    cli2.trainer.callbacks.append(check)
    cli2.trainer.fit(cli2.model, cli2.datamodule, ckpt_path=str(last), weights_only=True)
    assert check.checked
    assert cli2.trainer.global_step == 3 * 6 * 2  # training continued to the end
    assert any(not torch.equal(a, b) for a, b in zip(check.params_at_start, cli2.model.parameters()))
    assert saved["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(0.005)  # after the milestone
    assert cli2.trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.005)
