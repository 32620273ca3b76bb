"""Exact resume: ``train.py fit`` killed with SIGKILL after a mid-epoch checkpoint and resumed from
``last.ckpt`` ends bit-identical to an uninterrupted run (weights, optimiser, LR schedule, counters,
free-training perturbation, the RNG states), for each training module class.

The killed run is a separate process (train.py's ``cli_main`` on its command line, with
``PauseAt`` of ``tests/probes/faults.py``, which sleeps once the chosen step's checkpoint is written), forked from
the test process so that it skips a fresh interpreter's ~5 s of imports; the reference and the resumed
run are in-process (same thread count, CPU). Runs are tiny (digits / the vendored Omniglot splits, a few steps).
"""
from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import torch

from helpers import REPO, fork_train_py
from lightning_adv.cli import main

QUICK = str(REPO / "configs" / "quickstart.yaml")
COMMON = ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false", "--trainer.accelerator", "cpu",
          "--trainer.enable_model_summary", "false", "--trainer.limit_val_batches", "1"]

DISTILL = """model:
  class_path: lightning_adv.modules.KnowledgeDistillation
  init_args:
    arch: small_cnn
    in_channels: 1
    teacher_arch: small_cnn
    teacher_checkpoint: {teacher}
    objective:
      class_path: lightning_adv.objectives.{cls}
      init_args: {objective}
    optim: {{optimizer: sgd, lr: 0.05, scheduler: multistep, milestones: [1]}}
"""


def _teacher(tmp: Path) -> Path:
    from lightning_adv.models import create_model

    torch.manual_seed(1)
    path = tmp / "teacher.pt"
    torch.save(create_model("small_cnn", num_classes=10, in_channels=1).state_dict(), path)
    return path


def _case(name: str, tmp: Path) -> tuple[list[str], int]:
    """(CLI arguments without the subcommand, step after whose checkpoint the run is killed)."""
    steps = ["--trainer.limit_train_batches", "5", "--checkpoint.every_n_train_steps", "3"]
    sgd = ["--model.optim.optimizer", "sgd", "--model.optim.lr", "0.05", "--model.optim.scheduler", "multistep",
           "--model.optim.milestones", "[1]"]
    if name == "pgd":
        return ["--config", QUICK, "--model.objective.init_args.attack.steps", "2", *sgd, *steps], 3
    if name in ("trades", "free"):
        cfg = tmp / f"{name}.yaml"
        objective = ("{class_path: lightning_adv.objectives.TRADES, init_args: {beta: 6.0, attack: {eps: 0.15, "
                     "steps: 2, step_size: 0.06, loss: kl, bn_mode: eval}}}" if name == "trades" else
                     "{class_path: lightning_adv.objectives.Free, init_args: {eps: 0.15, replays: 2}}")
        cfg.write_text(f"model:\n  init_args:\n    objective: {objective}\n")
        every = 3 if name == "trades" else 4
        return ["--config", QUICK, "--config", str(cfg), *sgd, "--trainer.limit_train_batches", "5",
                "--checkpoint.every_n_train_steps", str(every)], every
    if name in ("ard", "fastard"):
        cfg = tmp / f"{name}.yaml"
        cls, objective = (("ARD", "{temperature: 4.0, attack: {eps: 0.15, steps: 2, step_size: 0.06, bn_mode: train}}")
                          if name == "ard" else ("FastARD", "{temperature: 4.0, eps: 0.15, replays: 2}"))
        cfg.write_text(DISTILL.format(cls=cls, teacher=_teacher(tmp), objective=objective))
        every = "3" if name == "ard" else "4"
        return ["--config", QUICK, "--config", str(cfg), "--trainer.limit_train_batches", "5",
                "--checkpoint.every_n_train_steps", every], int(every)
    assert name == "aq"
    return ["--config", str(REPO / "configs" / "aq_omniglot_minimal.yaml"),
            "--data.data_dir", str(tmp.parent / "omniglot_minimal"), "--data.shots", "1", "--data.queries", "1",
            "--data.tasks_per_batch", "1", "--data.val_shots", "1", "--data.val_episodes", "1",
            "--data.train_episodes", "5", "--data.image_size", "16", "--model.image_size", "16",
            "--model.arch_kwargs", json.dumps({"width": 4}), "--model.objective.init_args.attack.steps", "1",
            "--model.eval_attack.steps", "1", "--checkpoint.every_n_train_steps", "3"], 3


def _killed_run(args: list[str], root: Path, step: int, common: list[str] = COMMON,
                last: Path = Path("checkpoints") / "last.ckpt") -> Path:
    """Run train.py fit in a forked process, SIGKILL it once step ``step``'s checkpoint (``root / last``) is on disk."""
    flag = root / "paused"
    argv = ["fit", *args, *common, "--trainer.default_root_dir", str(root), "--trainer.callbacks+=probes.faults.PauseAt",
            "--trainer.callbacks.step", str(step), "--trainer.callbacks.flag", str(flag)]
    proc = fork_train_py(*argv, expect=None, kill_when=flag.exists, timeout=240)
    if not flag.exists():
        raise AssertionError(f"train.py ended before the kill: {proc.stderr[-2000:]}")
    assert proc.returncode == -signal.SIGKILL
    last = root / last
    saved = torch.load(last, map_location="cpu", weights_only=True)
    assert saved["global_step"] == step  # the kill came after this mid-epoch checkpoint, before the next one
    return last


def _equal(a, b, path="ckpt") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), path
    elif isinstance(a, dict):
        assert set(a) == set(b), (path, sorted(set(a) ^ set(b)))
        for k in a:
            _equal(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _equal(x, y, f"{path}[{i}]")
    else:
        assert a == b, (path, a, b)


KEYS = ("state_dict", "optimizer_states", "lr_schedulers", "global_step", "epoch", "free_delta")


@pytest.mark.parametrize("name", ["pgd", "trades", "free", "ard", "fastard", "aq"])
def test_kill_and_resume_is_bit_identical(name, tmp_path):
    torch.set_num_threads(1)
    args, step = _case(name, tmp_path)
    # 5 batches an epoch; one epoch (time); pgd and free also cross an epoch end, a validation and an LR milestone
    args += ["--trainer.max_epochs", "2" if name in ("pgd", "free") else "1"]
    ref_root, run_root = tmp_path / "reference", tmp_path / "killed"
    main(["fit", *args, *COMMON, "--trainer.default_root_dir", str(ref_root)])
    last = _killed_run(args, run_root, step)
    main(["fit", *args, *COMMON, "--trainer.default_root_dir", str(run_root), "--ckpt_path", str(last)])
    ref = torch.load(ref_root / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    got = torch.load(last, map_location="cpu", weights_only=True)
    final = ref["global_step"]
    assert got["global_step"] == final and final == {"free": 20, "fastard": 10, "pgd": 10}.get(name, 5)
    assert got["epoch"] == ref["epoch"]
    for key in KEYS:
        assert (key in ref) == (key in got), key
        if key in ref:
            _equal(ref[key], got[key], key)
    assert ("free_delta" in ref) == (name in ("free", "fastard"))
    # the generators end in the same state too (everything random after the kill was replayed)
    rng = [v for k, v in ref["callbacks"].items() if k.startswith("ResumeState")]
    rng_got = [v for k, v in got["callbacks"].items() if k.startswith("ResumeState")]
    _equal(rng, rng_got, "rng")


def _same_end(ref_ckpt: Path, got_ckpt: Path, steps: int) -> None:
    ref = torch.load(ref_ckpt, map_location="cpu", weights_only=True)
    got = torch.load(got_ckpt, map_location="cpu", weights_only=True)
    assert ref["global_step"] == got["global_step"] == steps  # no epoch skipped, none repeated
    for key in ("state_dict", "optimizer_states", "lr_schedulers", "epoch"):
        _equal(ref[key], got[key], key)


# (checkpoint.every_n_train_steps, trainer.limit_train_batches, kill step): the last checkpoint
# before the kill is the one written at the end of epoch 0: after its validation (default
# checkpointing), or a step save falling on the epoch's last batch (deferred past the validation)
EPOCH_ENDS = [(None, 5, 5), (5, 5, 5), (19, None, 19)]


@pytest.mark.parametrize("every,limit,step", EPOCH_ENDS, ids=["epoch-end", "step-on-last-batch", "full-epoch"])
def test_kill_at_an_epoch_boundary_resumes_bit_identical(every, limit, step, tmp_path):
    """A StatefulDataLoader restored at the end of its pass serves nothing (the resumed run skipped an
    epoch) or the old pass again; the shuffle of datamodules/sampling.py and ResumeState fix that."""
    torch.set_num_threads(1)
    args = ["--config", QUICK, "--model.objective.init_args.attack.steps", "2", "--trainer.max_epochs", "2"]
    args += [] if every is None else ["--checkpoint.every_n_train_steps", str(every)]
    args += [] if limit is None else ["--trainer.limit_train_batches", str(limit)]
    ref_root, run_root = tmp_path / "reference", tmp_path / "killed"
    main(["fit", *args, *COMMON, "--trainer.default_root_dir", str(ref_root)])
    last = _killed_run(args, run_root, step)
    main(["fit", *args, *COMMON, "--trainer.default_root_dir", str(run_root), "--ckpt_path", str(last)])
    _same_end(ref_root / "checkpoints" / "last.ckpt", last, 2 * step)


def test_extending_a_finished_run_equals_the_longer_run(tmp_path):
    """fit for 1 epoch, then `--ckpt_path last.ckpt --trainer.max_epochs 2` = fit for 2 epochs."""
    torch.set_num_threads(1)
    args = ["--config", QUICK, "--model.objective.init_args.attack.steps", "2", "--trainer.limit_train_batches", "5",
            *COMMON]
    main(["fit", *args, "--trainer.max_epochs", "2", "--trainer.default_root_dir", str(tmp_path / "two")])
    main(["fit", *args, "--trainer.max_epochs", "1", "--trainer.default_root_dir", str(tmp_path / "one")])
    last = tmp_path / "one" / "checkpoints" / "last.ckpt"
    main(["fit", *args, "--trainer.max_epochs", "2", "--trainer.default_root_dir", str(tmp_path / "one"),
          "--ckpt_path", str(last)])
    _same_end(tmp_path / "two" / "checkpoints" / "last.ckpt", last, 10)


def test_resume_continues_the_run_and_its_best_checkpoint(tmp_path):
    """Killed mid-run after a best checkpoint exists, resumed: the same TensorBoard version folder, and the
    checkpoint callback's best score and best file are those of the uninterrupted run (before issue 24 the
    resumed run opened version_1 and chose its best among post-resume epochs only)."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    torch.set_num_threads(1)
    common = COMMON[2:]  # COMMON without "--trainer.logger false": the default TensorBoard logger
    args = ["--config", QUICK, "--model.objective.init_args.attack.steps", "1", "--trainer.max_epochs", "3",
            "--trainer.limit_train_batches", "4", "--checkpoint.every_n_train_steps", "2"]
    version = Path("quickstart") / "version_0"  # the config's logger name
    ref = main(["fit", *args, *common, "--trainer.default_root_dir", str(tmp_path / "reference")])
    last = _killed_run(args, tmp_path / "killed", 6, common, version / "checkpoints" / "last.ckpt")
    assert any(p.name.startswith("best") for p in last.parent.iterdir())  # epoch 0's best exists at the kill
    got = main(["fit", *args, *common, "--trainer.default_root_dir", str(tmp_path / "killed"), "--ckpt_path", str(last)])
    assert sorted(p.name for p in (tmp_path / "killed" / "quickstart").iterdir()) == ["version_0"]
    assert got.trainer.log_dir == str(tmp_path / "killed" / version)
    cb_ref, cb_got = (next(c for c in cli.trainer.callbacks if isinstance(c, ModelCheckpoint)) for cli in (ref, got))
    assert Path(cb_got.best_model_path).relative_to(tmp_path / "killed") == \
        Path(cb_ref.best_model_path).relative_to(tmp_path / "reference")
    assert float(cb_got.best_model_score) == float(cb_ref.best_model_score)
    best_ref = torch.load(cb_ref.best_model_path, map_location="cpu", weights_only=True)
    best_got = torch.load(cb_got.best_model_path, map_location="cpu", weights_only=True)
    assert best_got["global_step"] == best_ref["global_step"]
    _equal(best_ref["state_dict"], best_got["state_dict"], "best.state_dict")


def test_resume_with_a_csv_logger_continues_its_version_and_keeps_its_rows(tmp_path):
    """A CSV logger continues the run's version folder as TensorBoard does, and the rows written before the
    stop stay in its metrics.csv (Lightning's CSV writer deletes that file when it opens a non-empty folder)."""
    import csv

    torch.set_num_threads(1)
    cfg = tmp_path / "csv.yaml"
    cfg.write_text("trainer:\n  logger:\n    class_path: lightning.pytorch.loggers.CSVLogger\n"
                   "    init_args: {save_dir: runs, name: quickstart}\n")
    args = ["--config", QUICK, "--config", str(cfg), "--model.objective.init_args.attack.steps", "1",
            "--trainer.limit_train_batches", "2", "--trainer.default_root_dir", str(tmp_path), *COMMON[2:]]
    first = main(["fit", *args, "--trainer.max_epochs", "1"])
    run = Path(first.trainer.log_dir)
    assert run == tmp_path / "quickstart" / "version_0"
    got = main(["fit", *args, "--trainer.max_epochs", "2", "--ckpt_path", str(run / "checkpoints" / "last.ckpt")])
    assert Path(got.trainer.log_dir) == run
    assert sorted(p.name for p in run.parent.iterdir()) == ["version_0"]
    with open(run / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    epochs = {int(float(r["epoch"])) for r in rows if r.get("epoch")}
    assert epochs == {0, 1}, epochs
    assert sum(1 for r in rows if r.get("val/acc")) == 2  # one validation row per epoch, the first kept
