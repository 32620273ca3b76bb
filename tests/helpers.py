"""Plumbing the test files share: repo paths and config lists, quiet Trainers, seeded fits, ``train.py`` forked
from the test process (DDP runs with the callbacks of ``tests/probes``). Fixtures live in ``conftest.py``; a test file
imports what it shares from here, never from another test file (``tests/`` is on ``sys.path``: pyproject's
``[tool.pytest.ini_options] pythonpath``)."""
from __future__ import annotations

import os
import subprocess
import sys
import traceback
import types
from pathlib import Path
from typing import TYPE_CHECKING, Callable, NoReturn, Optional

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


def fork_train_py(*args: str, expect: Optional[int] = 0, kill_when: Optional[Callable[[], bool]] = None,
                  timeout: float = 600, **env: str) -> subprocess.CompletedProcess:
    """What ``python train.py *args`` in the checkout with :func:`subprocess_env` (``env`` adds variables) does,
    forked from the test process so that it skips a fresh interpreter's ~5 s of imports (the child is made to
    look like that process: :func:`_become_train_py`; under DDP, Lightning's launcher starts rank 1 as a fresh
    ``python train.py ...``). Its stdout and stderr (rank 1's too) are read until every writer is gone, as
    ``subprocess.run`` does. It runs in a process group of its own, killed whole (SIGKILL, exit status -9) once
    ``kill_when()`` is true (polled every 0.2 s). Fails the test with the end of the output after ``timeout``
    seconds, or unless the exit status is ``expect`` (None: any)."""
    import selectors
    import signal
    import time

    argv, full_env = [str(REPO / "train.py"), *args], subprocess_env(**env)
    (out_r, out_w), (err_r, err_w) = os.pipe(), os.pipe()
    pid = os.fork()
    if pid == 0:  # the child never returns into pytest
        os.close(out_r)
        os.close(err_r)
        _become_train_py(argv, full_env, out_w, err_w)
    try:
        os.setpgid(pid, pid)  # as the child does: a group of its own before anything can kill it
    except OSError:
        pass
    os.close(out_w)
    os.close(err_w)
    chunks: dict[int, list[bytes]] = {out_r: [], err_r: []}
    deadline, killed, timed_out = time.monotonic() + timeout, False, False
    with selectors.DefaultSelector() as sel:
        for fd in chunks:
            sel.register(fd, selectors.EVENT_READ)
        while sel.get_map():
            if not killed and ((kill_when is not None and kill_when()) or time.monotonic() > deadline):
                timed_out, killed = time.monotonic() > deadline, True
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            for key, _ in sel.select(0.2):
                data = os.read(key.fd, 1 << 16)
                if data:
                    chunks[key.fd].append(data)
                else:
                    sel.unregister(key.fd)
                    os.close(key.fd)
    returncode = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    # decoded with universal newlines, as subprocess.run(text=True) does (a progress bar's \r become \n)
    out, err = (b"".join(chunks[fd]).decode(errors="replace").replace("\r\n", "\n").replace("\r", "\n")
                for fd in (out_r, err_r))
    assert not timed_out, f"train.py timed out after {timeout} s: " + out[-3000:] + err[-5000:]
    assert expect is None or returncode == expect, f"exit status {returncode}: " + out[-3000:] + err[-5000:]
    return subprocess.CompletedProcess(argv, returncode, out, err)


def _become_train_py(argv: list[str], env: dict[str, str], out_fd: int, err_fd: int) -> NoReturn:
    """In the forked child: run ``lightning_adv.cli.cli_main`` as ``python train.py`` would, then ``os._exit``.
    What the child inherits from the pytest worker is set as a fresh interpreter has it: the environment, the
    working directory, ``sys.argv`` and a ``__main__`` without a module spec (from which Lightning's launcher
    builds rank 1's command line), stdout/stderr on ``out_fd``/``err_fd`` (not pytest's capture), its own
    process group, default signal handlers, no faulthandler, the default warning filters plus
    ``PYTHONWARNINGS`` (pytest records warnings in a list), logging without pytest's handlers (Lightning's
    to stderr, as when imported with none), one torch thread (before any OpenMP work: forking after a
    multi-threaded OpenMP region can hang) and torch's default dtype, grad mode and algorithm flags.
    ``sys.exit`` becomes the exit status; an uncaught exception prints its traceback and exits 1. No atexit
    handler runs (they are pytest's)."""
    code = 1
    try:
        os.setpgid(0, 0)
        os.dup2(out_fd, 1)
        os.dup2(err_fd, 2)
        os.close(out_fd)
        os.close(err_fd)
        sys.stdout = sys.__stdout__ = open(1, "w", encoding="utf-8", closefd=False)
        sys.stderr = sys.__stderr__ = open(2, "w", encoding="utf-8", errors="backslashreplace", buffering=1,
                                           closefd=False)
        os.environ.clear()
        os.environ.update(env)
        os.chdir(REPO)
        sys.argv = argv
        main = types.ModuleType("__main__")
        main.__file__ = argv[0]
        sys.modules["__main__"] = main
        _fresh_process_state(env)
        from lightning_adv.cli import cli_main

        cli_main()
        code = 0
    except SystemExit as stop:
        code = 0 if stop.code is None else stop.code if isinstance(stop.code, int) else 1
        if code == 1 and not isinstance(stop.code, int):  # sys.exit("message")
            print(stop.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001  (what the interpreter does with an uncaught exception)
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001
                pass
        os._exit(code)


def _fresh_process_state(env: dict[str, str]) -> None:
    """Signals, faulthandler, warnings, logging and torch's global state as in a fresh interpreter (see
    :func:`_become_train_py`)."""
    import faulthandler
    import importlib
    import logging
    import signal
    import warnings

    import torch

    torch.set_num_threads(1)
    fresh = {signal.SIGINT: signal.default_int_handler, signal.SIGPIPE: signal.SIG_IGN, signal.SIGXFSZ: signal.SIG_IGN}
    for sig in signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP}:
        try:
            signal.signal(sig, fresh.get(sig, signal.SIG_DFL))
        except (OSError, ValueError):
            pass
    faulthandler.disable()  # pytest's, writing to the worker's stderr
    if env.get("PYTHONFAULTHANDLER"):
        faulthandler.enable()
    # the interpreter's default filters, then -W / PYTHONWARNINGS on top (applied by the reload, which also
    # puts back warnings.showwarning: pytest's catch_warnings records warnings instead of printing them)
    sys.warnoptions[:] = [opt for opt in env.get("PYTHONWARNINGS", "").split(",") if opt]
    warnings.resetwarnings()
    for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
        warnings.simplefilter("ignore", category, append=True)
    warnings.filterwarnings("default", category=DeprecationWarning, module="__main__")
    importlib.reload(warnings)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.setLevel(logging.WARNING)
    for logger in [root, *(lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger))]:
        for handler in logger.handlers:
            if type(handler) is logging.StreamHandler:  # made with the stderr of their import (pytest's capture)
                handler.stream = sys.stderr  # not setStream: it flushes the old stream, which may be closed
    for name in ("lightning.pytorch", "lightning.fabric"):  # imported with no root handler, each has its own
        logger = logging.getLogger(name)
        if name in sys.modules and not logger.handlers:
            logger.addHandler(logging.StreamHandler())
            logger.propagate = False
    torch.set_default_dtype(torch.float32)
    torch.set_grad_enabled(True)
    torch.use_deterministic_algorithms(False)
    torch.autograd.set_detect_anomaly(False)
    torch.set_float32_matmul_precision("highest")


def run_ddp(tmp_path: Path, *extra: str, config: str = "configs/quickstart.yaml") -> list[dict]:
    """``train.py fit`` of ``config`` for one epoch in 2 gloo processes (rank 0 forked by :func:`fork_train_py`,
    rank 1 a fresh ``python train.py`` started by Lightning's launcher), with the PGD evaluator and
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
    fork_train_py("fit", "--config", config, "--config", str(probe_cfg), "--trainer.accelerator", "cpu",
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
