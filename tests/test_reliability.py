"""Issue 12: one-line errors from train.py, checked checkpoints, NaN guard, checkpoints of every
module class through validate/test, logs following default_root_dir."""
from __future__ import annotations

import math

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from helpers import REPO
from lightning_adv.cli import cli_main, main
from lightning_adv.errors import NonFiniteTrainingError

QUICK = str(REPO / "configs" / "quickstart.yaml")


def _args(tmp, *extra, sub="fit"):
    return ([sub] if sub else []) + ["--config", QUICK, "--trainer.logger", "false", "--trainer.default_root_dir",
                                     str(tmp), "--trainer.enable_progress_bar", "false", "--trainer.accelerator", "cpu",
                                     "--trainer.enable_model_summary", "false", *extra]


def _last_line(capsys, args):
    with pytest.raises(SystemExit) as info:
        cli_main(args)
    lines = [ln for ln in capsys.readouterr().err.strip().splitlines() if ln.strip()]
    return info.value.code, lines[-1]


@pytest.fixture(scope="module")
def quick_ckpt(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("q")
    main(_args(tmp, "--trainer.max_steps", "2", "--trainer.limit_val_batches", "1"))
    return tmp / "checkpoints" / "last.ckpt"


# (extra arguments, words the last line must contain)
ONE_LINE = [
    (["--model.objective.init_args.attack.eps", "nan"], ["eps=nan", "finite"]),
    (["--model.optim.lr", "inf"], ["model.optim.lr=inf", "finite"]),
    (["--model.optim.lr", "1e12"], ["lr", "diverge"]),
    (["--model.objective", "{class_path: lightning_adv.objectives.TRADES, init_args: {beta: .nan}}"], ["beta", "finite"]),
    (["--model.objective.init_args.attack.eps", "0"], ["attack.eps=0", "eps > 0"]),
    (["--model.objective.init_args.attack.eps", "-0.1"], ["eps", "-0.1"]),
    (["--model.objective.init_args.attak.eps", "0.1"], ["attak"]),
    (["--data.batch_size", "0"], ["batch_size=0"]),
]


@pytest.mark.parametrize("extra,words", ONE_LINE, ids=[" ".join(e) for e, _ in ONE_LINE])
def test_bad_input_ends_with_one_readable_line(extra, words, tmp_path, capsys):
    code, line = _last_line(capsys, _args(tmp_path, *extra))
    assert code == 2 and line.startswith("error: ")
    assert all(w in line for w in words), line
    assert "Does not validate" not in line and "Traceback" not in line
    assert not (tmp_path / "checkpoints").exists()


def test_yaml_syntax_error_names_the_file(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  init_args: {arch: [1, 2\n")
    code, line = _last_line(capsys, _args(tmp_path, "--config", str(bad)))
    assert code == 2 and str(bad) in line and "line" in line


def test_debug_env_prints_the_traceback(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LIGHTNING_ADV_DEBUG", "1")
    with pytest.raises(SystemExit):
        cli_main(_args(tmp_path, "--model.objective.init_args.attack.eps", "0"))
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("error: ")


def test_bad_checkpoints_are_named(quick_ckpt, tmp_path, capsys):
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint\n")
    raw = tmp_path / "raw.pt"
    torch.save(torch.load(quick_ckpt, weights_only=True)["state_dict"], raw)
    for path, words in ((text, "not a readable PyTorch checkpoint"), (raw, "--model.init_weights"),
                        (tmp_path / "missing.ckpt", "does not exist")):
        code, line = _last_line(capsys, _args(tmp_path, "--ckpt_path", str(path), sub="validate"))
        assert code == 2 and words in line and str(path) in line, line
    # a checkpoint of another module class: Lightning would silently switch the model class
    other = ["--model.class_path", "lightning_adv.modules.Classifier", "--model.init_args.arch", "small_cnn",
             "--model.init_args.in_channels", "1"]
    cfg = tmp_path / "natural.yaml"
    cfg.write_text("model:\n  class_path: lightning_adv.modules.Classifier\n  init_args: {in_channels: 1}\n")
    code, line = _last_line(capsys, ["validate", "--config", str(cfg),
                                     "--data.class_path", "lightning_adv.datamodules.DigitsDataModule",
                                     "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path),
                                     "--ckpt_path", str(quick_ckpt)])
    assert code == 2 and "AdvTraining" in line and "Classifier" in line, (line, other)


class _Poison(Callback):
    """Make the weights NaN before step ``at`` (as a diverging LR would)."""

    def __init__(self, at):
        self.at = at

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == self.at:
            with torch.no_grad():
                next(module.parameters()).fill_(float("nan"))


def test_non_finite_run_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    cli = main(_args(tmp_path, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "8",
                     "--checkpoint.every_n_train_steps", "2", sub=None), run=False)
    cli.trainer.callbacks.append(_Poison(at=3))
    with pytest.raises(NonFiniteTrainingError, match="global step 4"):
        cli.trainer.fit(cli.model, cli.datamodule)
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 2
    assert all(bool(v.isfinite().all()) for v in saved["state_dict"].values() if v.is_floating_point())


def test_logs_follow_default_root_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "elsewhere"
    main(["fit", "--config", QUICK, "--trainer.default_root_dir", str(root), "--trainer.max_steps", "1",
          "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false", "--trainer.accelerator", "cpu"])
    assert not (tmp_path / "runs").exists()
    assert list(root.glob("quickstart/version_0/checkpoints/last.ckpt"))


# --------------------------------------------------------------- every module class: validate/test/resume
DISTILL = """model:
  class_path: lightning_adv.modules.KnowledgeDistillation
  init_args:
    arch: small_cnn
    in_channels: 1
    teacher_arch: small_cnn
    teacher_checkpoint: {teacher}
    objective: {{class_path: lightning_adv.objectives.{cls}, init_args: {objective}}}
"""


def _module_config(name, tmp):
    if name in ("AdvTraining", "Classifier"):
        if name == "AdvTraining":
            return ["--config", QUICK]
        cfg = tmp / "nat.yaml"
        cfg.write_text("model:\n  class_path: lightning_adv.modules.Classifier\n  init_args: {in_channels: 1}\n")
        return ["--config", QUICK, "--config", str(cfg), "--checkpoint.monitor", "val/acc"]
    if name == "CertifiedTraining":
        return ["--config", str(REPO / "configs" / "certified_ibp_digits.yaml")]
    if name == "GANTraining":
        return ["--config", str(REPO / "configs" / "purifier_defensegan_omniglot.yaml"),
                "--data.episodes.init_args.data_dir", str(tmp.parent / "omniglot_minimal"),
                "--data.episodes.init_args.image_size", "16", "--model.image_size", "16", "--model.gen_width", "8",
                "--model.critic_width", "8", "--model.latent_dim", "8", "--model.critic_iters", "1",
                "--model.val_restarts", "1", "--model.val_steps", "1", "--data.batch_size", "8"]
    if name == "AdversarialQuerying":
        return ["--config", str(REPO / "configs" / "aq_omniglot_minimal.yaml"), "--data.data_dir",
                str(tmp.parent / "omniglot_minimal"), "--data.shots", "1", "--data.queries", "1",
                "--data.tasks_per_batch", "1", "--data.val_shots", "1", "--data.val_episodes", "1",
                "--data.test_shots", "1", "--data.test_queries", "1", "--data.test_episodes", "1",
                "--data.image_size", "16", "--model.image_size", "16", "--model.arch_kwargs", '{"width": 4}',
                "--model.objective.init_args.attack.steps", "1", "--model.eval_attack.steps", "1"]
    from lightning_adv.models import create_model

    teacher = tmp / "teacher.pt"
    torch.save(create_model("small_cnn", num_classes=10, in_channels=1).state_dict(), teacher)
    objective = {"KD": "{temperature: 4.0}",
                 "ARD": "{temperature: 4.0, attack: {eps: 0.15, steps: 2, step_size: 0.1, bn_mode: train}}",
                 "FastARD": "{temperature: 4.0, eps: 0.15, replays: 2}"}[name]
    cfg = tmp / "distill.yaml"
    cfg.write_text(DISTILL.format(cls=name, teacher=teacher, objective=objective))
    extra = ["--checkpoint.monitor", "val/acc"] if name == "KD" else []
    return ["--config", QUICK, "--config", str(cfg), *extra]


#: module classes, and the distillation objectives (KD, ARD, Fast-ARD) of KnowledgeDistillation
MODULES = ["Classifier", "AdvTraining", "KD", "ARD", "FastARD", "AdversarialQuerying", "CertifiedTraining",
           "GANTraining"]
MODULE_CLASS = {"KD": "KnowledgeDistillation", "ARD": "KnowledgeDistillation", "FastARD": "KnowledgeDistillation"}


@pytest.mark.parametrize("name", MODULES)
def test_checkpoint_of_each_module_validates_tests_and_resumes(name, tmp_path):
    torch.set_num_threads(1)
    cfg = _module_config(name, tmp_path)
    common = ["--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path), "--trainer.accelerator", "cpu",
              "--trainer.enable_progress_bar", "false", "--trainer.limit_val_batches", "1",
              "--trainer.limit_test_batches", "1", "--trainer.enable_model_summary", "false"]
    main(["fit", *cfg, *common, "--trainer.max_steps", "2", "--trainer.limit_train_batches", "2"])
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    cls = MODULE_CLASS.get(name, name)
    assert torch.load(ckpt, weights_only=True)["hyper_parameters"]["_class_path"].endswith(cls)
    for sub in ("validate",) if name == "GANTraining" else ("validate", "test"):  # a purifier has no test stage
        cli = main([sub, *cfg, *common, "--ckpt_path", str(ckpt)])
        assert type(cli.model).__name__ == cls
        stage = "val" if sub == "validate" else "test"
        assert any(k.startswith(f"{stage}/") and math.isfinite(float(v)) for k, v in cli.trainer.callback_metrics.items())
    if name not in ("Classifier", "KD"):
        return  # resuming the others is tests/test_resume.py's (bit-identical after kill -9)
    cli = main(["fit", *cfg, *common, "--trainer.max_steps", "3", "--trainer.limit_train_batches", "2",
                "--ckpt_path", str(ckpt)])
    assert cli.trainer.global_step == 3
