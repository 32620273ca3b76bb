"""benchmarks/gpu_check.sh cannot rot: its CPU dry run runs every row's code path here, a failing row
makes the exit status non-zero and is named, and without CUDA the real run refuses in one line."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest
import torch

from helpers import REPO

SCRIPT = REPO / "benchmarks" / "gpu_check.sh"
ROWS = ("at_fp32", "at_bf16", "channels_last", "compile", "ddp_fit", "attack_bf16", "attack_fp16",
        "eval_default_fp32")


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)


def test_dry_run_prints_one_table_with_every_row_passing():
    proc = _run("--dry-run")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = proc.stdout[proc.stdout.index("## gpu_check: CPU DRY RUN"):].splitlines()
    assert table[1].startswith("| check | result | status |")
    body = [line for line in table[3:] if line.startswith("| ")]
    assert [line.split(" | ")[0][2:] for line in body] == list(ROWS)
    assert all(" | PASS | " in line for line in body), "\n".join(body)


def _gpu_check_module():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_failing_row_gives_exit_1_and_is_named(monkeypatch, capsys):
    gpu_check = _gpu_check_module()

    def broken(cfg, data):
        raise RuntimeError("suite disagrees")

    monkeypatch.setattr(gpu_check, "eval_default_row", broken)
    monkeypatch.setattr(gpu_check, "digits_model", lambda cfg: None)
    assert gpu_check.main(["--dry-run", "--only", "eval_default_fp32"]) == 1
    out, err = capsys.readouterr()
    assert "| eval_default_fp32 | error | FAIL |" in out and "RuntimeError: suite disagrees" in out
    assert "FAILED rows: eval_default_fp32" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_without_cuda_the_real_run_refuses_in_one_line():
    proc = _run()
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "no CUDA device" in proc.stderr and "--dry-run" in proc.stderr
