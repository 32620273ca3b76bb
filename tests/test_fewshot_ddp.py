"""DDP (2 CPU processes, gloo) through train.py: ranks draw different tasks; test results aggregate all episodes."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from helpers import fork_train_py

pytestmark = pytest.mark.ddp
EPISODES = 8


def _run(tmp_path: Path, subcommand: str, *extra: str) -> subprocess.CompletedProcess:
    probe = tmp_path / "probe.yaml"
    probe.write_text("trainer:\n  callbacks:\n    - class_path: probes.episodes.EpisodeProbe\n"
                     f"      init_args: {{out_dir: {tmp_path / 'probe'}}}\n")
    return fork_train_py(subcommand, "--config", "configs/aq_omniglot_minimal.yaml", "--config",
           str(probe), "--trainer.accelerator", "cpu", "--trainer.strategy", "ddp", "--trainer.devices", "2",
           "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
           "--trainer.default_root_dir", str(tmp_path), "--data.data_dir", str(tmp_path / "data"),
           "--data.test_episodes", str(EPISODES), "--data.eval_tasks_per_batch", "2", "--data.image_size", "20",
           "--model.image_size", "20", "--model.eval_attack.steps", "2", *extra)


def test_ddp_fit_adversarial_querying_ranks_draw_different_tasks(tmp_path):
    _run(tmp_path, "fit", "--data.train_episodes", "8", "--data.tasks_per_batch", "2", "--data.val_episodes", "2",
         "--model.objective.init_args.attack.steps", "1")
    r0, r1 = (json.loads((tmp_path / "probe" / f"fit{r}.json").read_text()) for r in range(2))
    assert r0["step"] == r1["step"] == 2  # 8 tasks / 2 ranks / 2 per batch
    assert len(r0["episodes"]) == len(r1["episodes"]) == 4
    assert not set(r0["episodes"]) & set(r1["episodes"])  # each rank meta-trained on its own tasks
    assert r0["param_sum"] == pytest.approx(r1["param_sum"], rel=1e-6)  # gradients were all-reduced
    assert r0["metrics"]["val/robust_acc"] == pytest.approx(r1["metrics"]["val/robust_acc"], abs=1e-6)


def test_ddp_test_aggregates_episodes_of_both_ranks(tmp_path):
    proc = _run(tmp_path, "test")
    r0, r1 = (json.loads((tmp_path / "probe" / f"rank{r}.json").read_text()) for r in range(2))
    assert r0["world_size"] == r1["world_size"] == 2
    # each rank drew its own half of the fixed test episodes
    assert len(r0["episodes"]) == len(r1["episodes"]) == EPISODES // 2
    assert not set(r0["episodes"]) & set(r1["episodes"])
    # the reported accuracy covers every episode of both ranks, identically on both
    for r in (r0, r1):
        assert r["results"]["acc"]["episodes"] == EPISODES
    total = r0["local"]["total"] + r1["local"]["total"]
    assert r0["local"]["n"] + r1["local"]["n"] == EPISODES
    assert r0["metrics"]["test/acc"] == pytest.approx(total / EPISODES, abs=1e-6)
    assert r1["metrics"]["test/acc"] == pytest.approx(r0["metrics"]["test/acc"], abs=1e-6)
    assert r0["metrics"]["test/robust_acc_ci95"] == pytest.approx(r1["metrics"]["test/robust_acc_ci95"], abs=1e-6)
    assert "| robust_acc |" in proc.stdout  # the table, printed once by rank 0
    assert proc.stdout.count("| robust_acc |") == 1
