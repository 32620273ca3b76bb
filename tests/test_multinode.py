"""Two "nodes" on localhost: two separate ``torchrun --nnodes 2 --nproc-per-node 1`` launches of
train.py (gloo, CPU), as a user starts one per machine (docs/multi-node.md)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest
import torch

from helpers import REPO, subprocess_env

pytestmark = pytest.mark.ddp

N_TRAIN, N_VAL, N_TEST = 1212, 135, 450  # DigitsDataModule's split of the 1797 images

PROBE = """trainer:
  callbacks:
    - class_path: lightning_adv.callbacks.PGDEvaluation
      init_args: {{attacks: [{{eps: 0.15, steps: 3, step_size: 0.06}}], num_images: 0}}
    - class_path: probes.nodes.NodeProbe
      init_args: {{out_dir: {out}}}
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch_two_nodes(args: list[str], cwd: Path, timeout: float = 240.0) -> list[tuple[int, str]]:
    """Start ``torchrun`` once per node rank (each in its own process group), wait for both and
    return ``(exit status, output)`` per node; on a timeout or an error both groups are killed."""
    port = free_port()
    env = subprocess_env()
    procs, logs = [], []
    try:
        for node in (0, 1):
            cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                   "--node-rank", str(node), "--master-addr", "127.0.0.1", "--master-port", str(port),
                   "train.py", *args]
            logs.append(tempfile.TemporaryFile("w+"))  # a file, not a pipe: a full pipe would block the node
            procs.append(subprocess.Popen(cmd, cwd=cwd, env=env, stdout=logs[-1], stderr=subprocess.STDOUT,
                                          text=True, start_new_session=True))
        deadline = time.monotonic() + timeout
        codes = [p.wait(timeout=max(1.0, deadline - time.monotonic())) for p in procs]
        return [(rc, (log.seek(0), log.read())[1]) for rc, log in zip(codes, logs)]
    finally:
        for p in procs:  # no orphan survives: what is left of each group (torchrun and its worker)
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()
        for log in logs:
            log.close()


def _train_fingerprints() -> list[str]:
    from lightning_adv.datamodules import DigitsDataModule
    from probes.nodes import fingerprint

    data = DigitsDataModule(batch_size=64)  # the quickstart's data (same seed, same split)
    data.setup("fit")
    return [fingerprint(x, torch.as_tensor(y)) for x, y in data.train_dataset]


def _records(out: Path, stage: str) -> list[dict]:
    return [json.loads((out / f"{stage}_rank{r}.json").read_text()) for r in range(2)]


def test_two_nodes_one_process_each_fit_then_test(tmp_path):
    probe = tmp_path / "probe.yaml"
    probe.write_text(PROBE.format(out=tmp_path / "probe"))
    common = ["--config", "configs/quickstart.yaml", "--config", str(probe), "--trainer.accelerator", "cpu",
              "--trainer.num_nodes", "2", "--trainer.devices", "1", "--trainer.strategy", "ddp",
              "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
              "--trainer.default_root_dir", str(tmp_path)]
    runs = launch_two_nodes(["fit", *common, "--trainer.max_epochs", "2"], REPO)
    for node, (rc, out) in enumerate(runs):
        assert rc == 0, f"node {node}:\n{out[-5000:]}"
    r0, r1 = _records(tmp_path / "probe", "fit")
    # Lightning saw torchrun's two nodes: world 2, one process per node
    assert {r["environment"] for r in (r0, r1)} == {"TorchElasticEnvironment"}
    assert (r0["world_size"], r1["world_size"], r0["num_nodes"]) == (2, 2, 2)
    assert [(r["global_rank"], r["node_rank"], r["local_rank"]) for r in (r0, r1)] == [(0, 0, 0), (1, 1, 0)]
    # the distributed sampler split the training set: disjoint halves that together cover it
    assert r0["distributed_sampler"] and r1["distributed_sampler"], r0["sampler"]
    assert r0["train_seen"] == r1["train_seen"] == 2 * (N_TRAIN // 2)
    everything = Counter(_train_fingerprints())
    for epoch in range(2):  # in each epoch (the permutations stay in step across the nodes)
        assert Counter(r0["fingerprints"][epoch]) + Counter(r1["fingerprints"][epoch]) == everything, epoch
    assert r0["fingerprints"][0] != r0["fingerprints"][1]  # reshuffled
    # the evaluator's records were gathered over both ranks: the whole validation set, same numbers
    assert r0["evaluated"] == r1["evaluated"] == N_VAL
    assert r0["metrics"]["val/robust_acc"] == r1["metrics"]["val/robust_acc"]
    # one set of checkpoints (rank 0 writes), holding the RNG states of both ranks
    ckpts = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert len(ckpts) == 2 and "last.ckpt" in ckpts and ckpts[0].startswith("best-"), ckpts
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == r0["global_step"] == 20  # ceil(606 / 64) steps per rank and epoch
    assert next(v for k, v in ckpt["callbacks"].items() if "ResumeState" in k)["world_size"] == 2

    # test on both nodes from that checkpoint: the robust accuracy covers the whole test set, not half
    runs = launch_two_nodes(["test", *common, "--ckpt_path", str(tmp_path / "checkpoints" / "last.ckpt")], REPO)
    for node, (rc, out) in enumerate(runs):
        assert rc == 0, f"node {node}:\n{out[-5000:]}"
    t0, t1 = _records(tmp_path / "probe", "test")
    assert t0["evaluated"] == t1["evaluated"] == N_TEST
    assert t0["metrics"]["test/robust_acc"] == t1["metrics"]["test/robust_acc"]
    assert 0.0 <= t0["metrics"]["test/robust_acc"] <= t0["metrics"]["test/acc"] <= 1.0


def test_error_report_keys_on_the_global_rank_not_the_local_one(tmp_path, monkeypatch, capsys):
    """On node 1 of a two-node run LOCAL_RANK is 0 but the global rank is 1: a rank that fails by itself
    reports its own error, and only another rank's error file counts as a peer's."""
    from lightning_adv.callbacks.resume import RankErrorReport, peer_error, this_rank
    from lightning_adv.cli import cli_main

    folder = tmp_path / ".rank_errors"
    folder.mkdir()
    monkeypatch.setattr(RankErrorReport, "current_dir", str(folder))
    monkeypatch.setattr(RankErrorReport, "started", time.time())
    monkeypatch.setattr(RankErrorReport, "global_rank", None)
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("RANK", "1")
    (folder / "rank1.txt").write_text("error: rank 1: this process's own failure")
    assert this_rank() == 1 and peer_error(this_rank(), 0) is None
    with pytest.raises(SystemExit) as stop:
        cli_main(["fit", "--config", str(tmp_path / "missing.yaml")])
    assert stop.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: --config") and "this rank" not in last, last
    (folder / "rank0.txt").write_text("error: rank 0: a peer's failure")
    assert peer_error(1, 0) == "error: rank 0: a peer's failure"
    monkeypatch.delenv("RANK")
    monkeypatch.setenv("SLURM_PROCID", "3")  # srun's global rank
    assert this_rank() == 3
    monkeypatch.setattr(RankErrorReport, "global_rank", 5)  # a run set up: the trainer's rank wins
    assert this_rank() == 5
