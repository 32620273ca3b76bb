"""scripts/slurm/train.sbatch run by bash with stand-ins for srun and scontrol: the train.py command it
builds parses in the CLI with the values SLURM would set, and USR1 (the time limit near) requeues the job."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from helpers import REPO

SCRIPT = REPO / "scripts" / "slurm" / "train.sbatch"
FAKE = """#!/bin/bash
printf '%s\\n' "$@" > "{out}/{name}.args"
[ "{name}" = srun ] && [ -n "${{FAKE_SRUN_SLEEP:-}}" ] && sleep "$FAKE_SRUN_SLEEP"
exit 0
"""


def _directives() -> dict[str, str]:
    found = re.findall(r"^#SBATCH --([\w-]+)(?:=(\S+))?", SCRIPT.read_text(), flags=re.M)
    return {k: v for k, v in found}


def _start(tmp_path: Path, sleep: str = "") -> subprocess.Popen:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name in ("srun", "scontrol"):
        (bin_dir / name).write_text(FAKE.format(out=tmp_path, name=name))
        (bin_dir / name).chmod(0o755)
    d = _directives()
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", SLURM_JOB_ID="4242",
               SLURM_JOB_NUM_NODES=d["nodes"], SLURM_NTASKS_PER_NODE=d["ntasks-per-node"],
               SLURM_CPUS_PER_TASK=d["cpus-per-task"], FAKE_SRUN_SLEEP=sleep)
    return subprocess.Popen(["bash", str(SCRIPT), "configs/quickstart.yaml", "--trainer.max_epochs", "3"], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_directives_agree_one_task_per_gpu():
    d = _directives()
    assert d["ntasks-per-node"] == d["gpus-per-node"]  # Lightning: SLURM_NTASKS_PER_NODE must equal devices
    assert "requeue" in d and d["signal"].startswith("B:USR1@")  # the batch shell gets the signal, not the ranks


def test_srun_command_parses_in_the_cli(tmp_path, capsys):
    from lightning_adv.cli import main

    proc = _start(tmp_path)
    assert proc.wait(timeout=60) == 0, proc.communicate()[0]
    args = (tmp_path / "srun.args").read_text().splitlines()
    assert args[:3] == ["--kill-on-bad-exit=1", "python", "train.py"]
    train_args = args[3:]
    assert train_args[0] == "fit"
    flags = dict(zip(train_args, train_args[1:]))
    d = _directives()
    assert flags["--trainer.num_nodes"] == d["nodes"] and flags["--trainer.devices"] == d["ntasks-per-node"]
    assert flags["--trainer.default_root_dir"] == "runs/slurm-4242" and flags["--ckpt_path"] == "last"
    assert flags["--checkpoint.dirpath"] == "runs/slurm-4242/checkpoints"
    with pytest.raises(SystemExit) as done:
        main([*train_args, "--print_config"])
    assert done.value.code in (0, None)
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["trainer"]["num_nodes"] == 2 and str(cfg["trainer"]["devices"]) == "4" and cfg["trainer"]["max_epochs"] == 3
    assert cfg["trainer"]["strategy"] == "ddp" and cfg["ckpt_path"] == "last"
    assert cfg["checkpoint"]["every_n_train_steps"] == 500 and cfg["checkpoint"]["save_last"] is True
    plugin = cfg["trainer"]["plugins"][0]
    assert plugin["class_path"].endswith("SLURMEnvironment") and plugin["init_args"]["auto_requeue"] is False


def test_usr1_requeues_the_job(tmp_path):
    proc = _start(tmp_path, sleep="3")
    deadline = time.monotonic() + 30
    while not (tmp_path / "srun.args").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)  # the shell is in `wait`
    proc.send_signal(signal.SIGUSR1)
    out = proc.communicate(timeout=30)[0]
    assert proc.returncode == 0, out
    assert (tmp_path / "scontrol.args").read_text().split() == ["requeue", "4242"]
    assert "requeue job 4242" in out and "requeued" in out
