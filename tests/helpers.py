"""Plumbing the test files share: repo paths and config lists, quiet Trainers, seeded fits, ``train.py`` in a
subprocess (DDP runs with the callbacks of ``tests/probes``). Fixtures live in ``conftest.py``; a test file
imports what it shares from here, never from another test file (``tests/`` is on ``sys.path``: pyproject's
``[tool.pytest.ini_options] pythonpath``)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import pytest

if TYPE_CHECKING:
    import lightning.pytorch as pl
    import torch

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"
QUICKSTART = str(REPO / "configs" / "quickstart.yaml")

DISTILL_PREFIXES = ("kd_", "ard_", "fastard_")
#: add-on configs for `test` (a second --config); run by test_attack_suite_cli.py
EVAL_PREFIXES = ("eval_",)
#: chapter-6 configs (natural accuracy, analysis callbacks): run by test_ch6_configs.py
CH6_PREFIXES = ("ch6_",)
#: few-shot configs, run by test_fewshot_configs.py
FEWSHOT_PREFIXES = ("aq_",)
#: chapter-3 order-book configs (LOBSTER data), run by test_orderbook_attacks.py
LOB_PREFIXES = ("lob_",)
#: pre-processing defense (purifier) training configs (thesis 5.5), run by test_purifier_configs.py
PURIFIER_PREFIXES = ("purifier_",)
#: defensive distillation (teacher then student), run by test_defensive_distillation.py
DEFDISTILL_PREFIXES = ("defensive_distillation_",)
#: certified training and smoothing configs, run by test_certified_configs.py
CERTIFIED_PREFIXES = ("certified_", "smoothing_")
#: configs that need no teacher; the distillation configs are run by test_distill_configs.py
CONFIGS = sorted(p for p in (REPO / "configs").glob("*.yaml")
                 if not p.name.startswith(DISTILL_PREFIXES + EVAL_PREFIXES + CH6_PREFIXES + FEWSHOT_PREFIXES
                                          + LOB_PREFIXES + DEFDISTILL_PREFIXES + PURIFIER_PREFIXES
                                          + CERTIFIED_PREFIXES))

#: where the real-MNIST tests keep MNIST/raw (made once by the shared script, then reused)
MNIST_CACHE_ENV = "LIGHTNING_ADV_MNIST_CACHE"
MNIST_RAW = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def load_config(path: Path) -> dict:
    """A config file as a dict with its shared blocks filled in, as the CLI reads them: a string value
    naming an existing ``.yaml`` file (relative to the including file, e.g. ``_shared/optim/x.yaml``)
    becomes that file's content (docs/config-composition.md). CLI defaults (the logger's class) are not added."""
    import yaml

    def fill(value, folder: Path):
        if isinstance(value, str) and value.endswith(".yaml") and (folder / value).is_file():
            return load_config(folder / value)
        if isinstance(value, dict):
            return {k: fill(v, folder) for k, v in value.items()}
        if isinstance(value, list):
            return [fill(v, folder) for v in value]
        return value

    path = Path(path)
    return fill(yaml.safe_load(path.read_text()), path.resolve().parent)


# ---------------------------------------------------------------------- in-process training
def quiet_trainer(root: Optional[Path] = None, **kw) -> pl.Trainer:
    """A Trainer on one CPU without logger, checkpoints, progress bar, model summary or sanity check, writing
    under ``root`` (none: Lightning's default); ``kw`` adds or overrides Trainer arguments."""
    import lightning.pytorch as pl

    args = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                enable_model_summary=False, num_sanity_val_steps=0)
    if root is not None:
        args["default_root_dir"] = str(root)
    args.update(kw)
    return pl.Trainer(**args)


def seeded_fit(module: pl.LightningModule, datamodule: pl.LightningDataModule, epochs: int,
               root: Optional[Path] = None) -> pl.LightningModule:
    """``module`` after ``epochs`` epochs on ``datamodule`` without validation, everything seeded with 0."""
    import lightning.pytorch as pl

    pl.seed_everything(0, verbose=False)
    quiet_trainer(root, max_epochs=epochs, limit_val_batches=0).fit(module, datamodule)
    return module


def train_ibp_or_pgd(model: torch.nn.Module, xtr: torch.Tensor, ytr: torch.Tensor, certified: bool, eps: float,
                     steps: int, batch: int, lr: float, warmup: int, ramp_steps: int,
                     train_eps: float) -> torch.nn.Module:
    """IBP training with CertifiedTraining's schedules (eps 0 for ``warmup`` steps, then a ramp over ``ramp_steps`` to
    ``train_eps``, kappa 1 -> 0.5), or PGD-3 adversarial training at ``eps``; Adam, random batches, seed 0."""
    import torch
    import torch.nn.functional as F

    from lightning_adv.attacks import PGD
    from lightning_adv.certify import BoundNetwork, certified_loss, ramp

    net = BoundNetwork(model)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(0)
    pgd = PGD(eps=eps, steps=3, step_size=eps / 2, bn_mode="train")
    for step in range(steps):
        idx = torch.randint(0, xtr.shape[0], (batch,), generator=gen)
        x, y = xtr[idx], ytr[idx]
        if certified:
            e, kappa = ramp(step, warmup, ramp_steps, 0.0, train_eps), ramp(step, warmup, ramp_steps, 1.0, 0.5)
            loss = certified_loss(net, x, y, model(x), e, kappa, "ibp")[0]
        else:
            loss = F.cross_entropy(model(pgd(model, x, y)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


# ---------------------------------------------------------------------- train.py
def cli_args(root: Path, *extra: str, sub: Optional[str] = "fit") -> list[str]:
    """``lightning_adv.cli.main`` arguments on the quickstart config, quiet, on CPU, writing under ``root``
    (``sub=None`` for ``main(..., run=False)``)."""
    return ([sub] if sub else []) + ["--config", QUICKSTART, "--trainer.logger", "false", "--trainer.default_root_dir",
                                     str(root), "--trainer.enable_progress_bar", "false", "--trainer.accelerator",
                                     "cpu", *extra]


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment of a ``train.py`` subprocess: ``tests/`` (for ``probes.*``) and the checkout on
    ``PYTHONPATH``, one OpenMP thread per process; ``extra`` adds variables."""
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), str(REPO)]), OMP_NUM_THREADS="1", **extra)


def run_train_py(*args: str, **env: str) -> subprocess.CompletedProcess:
    """``python train.py *args`` in the checkout with :func:`subprocess_env` (``env`` adds variables); fails the
    test with the end of its output unless it exits 0."""
    proc = subprocess.run([sys.executable, "train.py", *args], cwd=REPO, env=subprocess_env(**env),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def run_ddp(tmp_path: Path, *extra: str, config: str = "configs/quickstart.yaml") -> list[dict]:
    """``train.py fit`` of ``config`` for one epoch in 2 gloo processes, with the PGD evaluator and
    ``probes.ranks.RankProbe``; the records the two ranks wrote."""
    import json

    probe_cfg = tmp_path / "probe.yaml"
    probe_cfg.write_text(
        "trainer:\n  callbacks:\n"
        "    - class_path: lightning_adv.callbacks.PGDEvaluation\n"
        "      init_args: {attacks: [{eps: 0.1, steps: 5, step_size: 0.03}], num_images: 0}\n"
        "    - class_path: probes.ranks.RankProbe\n"
        f"      init_args: {{out_dir: {tmp_path / 'probe'}}}\n"
    )
    run_train_py("fit", "--config", config, "--config", str(probe_cfg), "--trainer.accelerator", "cpu",
                 "--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.max_epochs", "1",
                 "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
                 "--trainer.default_root_dir", str(tmp_path), *extra)
    return [json.loads((tmp_path / "probe" / f"rank{r}.json").read_text()) for r in range(2)]


def check_ddp_run(records: list[dict], tmp_path: Path, n_train: int = 1212, batch: int = 64) -> dict:
    """What every DDP fit of :func:`run_ddp` must show (equal weights, a distributed sampler, reduced metrics,
    a checkpoint at the last step); the checkpoint."""
    import torch

    r0, r1 = records
    assert r0["world_size"] == r1["world_size"] == 2
    assert r0["strategy"] == "DDPStrategy"
    # gradients were all-reduced: both ranks end with the same weights
    assert r0["param_sum"] == pytest.approx(r1["param_sum"], rel=1e-6, abs=1e-6)
    assert r0["param_abs_sum"] == pytest.approx(r1["param_abs_sum"], rel=1e-6)
    # the sampler was distributed: each rank saw about half of the training images
    assert r0["train_samples"] + r1["train_samples"] in range(n_train, n_train + 2 * batch)
    assert abs(r0["train_samples"] - r1["train_samples"]) <= batch
    # metrics reduced across ranks: the robust accuracy both ranks log is the same number
    for key in ("val/robust_acc", "val/acc"):
        assert key in r0["metrics"]
        assert r0["metrics"][key] == pytest.approx(r1["metrics"][key], abs=1e-6)
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == r0["global_step"]
    return ckpt
