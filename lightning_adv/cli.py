"""The command line: ``python train.py fit --config configs/quickstart.yaml --trainer.max_epochs 2`` (``fit``,
``validate`` or ``test``; any ``--config`` file, any ``--a.b value`` override).

A LightningCLI in subclass mode: the config names the LightningModule (``model.class_path``)
and the LightningDataModule (``data.class_path``); every constructor argument, every
Trainer argument and the checkpoint callback (``checkpoint.*``) can be overridden on the
command line. Defaults added here:

* TensorBoard logger under ``runs/`` (``tensorboard --logdir runs``), without the ``hp_metric``
  placeholder: :class:`lightning_adv.callbacks.HparamsMetrics` puts the clean and robust accuracy in
  the hparams tab; images and figures go to any Lightning logger (docs/logging.md);
* ``validate`` / ``test --ckpt_path <run>/checkpoints/X.ckpt`` log into ``<run>`` (no new version)
  unless a logger or ``default_root_dir`` is given on the command line;
* ``checkpoint``: :class:`lightning_adv.callbacks.RobustCheckpoint` keeping ``last.ckpt`` and the best
  checkpoint by ``val/robust_acc`` (set ``--checkpoint.monitor val/acc`` for natural runs);
* ``trainer.inference_mode=false`` so ``test`` runs under ``no_grad`` (attacks re-enable
  autograd either way; this also keeps BN buffers ordinary tensors);
* checkpoints given with ``--ckpt_path`` load with ``weights_only=True``, and are checked
  first: a Lightning checkpoint of the config's module class (not a text file, a raw state
  dict or another module's checkpoint, which Lightning would silently switch to);
* the logger's ``save_dir`` follows ``--trainer.default_root_dir`` unless ``save_dir`` is
  given on the command line (the configs' ``save_dir: runs`` is the project default);
* :class:`lightning_adv.callbacks.ResumeState` (RNG states of every rank in each checkpoint: exact resume)
  and :class:`lightning_adv.callbacks.FiniteGuard` (stop, naming the step, when the loss or a weight
  becomes NaN/inf) on every run;
* :class:`lightning_adv.callbacks.CollapseWarning` (one line when the validation predictions collapse
  onto one class) on every run; ``--trainer.callbacks+=lightning_adv.callbacks.CollapseWarning
  --trainer.callbacks.stop true`` stops such a run;
* ``seed_everything: 0``.

Resume a stopped or killed run with ``--ckpt_path <run>/checkpoints/last.ckpt``: it continues in the same
TensorBoard or CSV version folder (unless the command line gives a logger), with the checkpoint callback's best
score and best path restored.

:func:`cli_main` (``train.py``) turns every bad input into one line at the end of the output
(``error: <parameter>=<value> ...; <fix>``) and exit status 2; ``LIGHTNING_ADV_DEBUG=1``
prints the full traceback before it. :func:`main` (the Python API) raises as usual.
"""
from __future__ import annotations

import os
import re
import sys
import traceback
from pathlib import Path
from typing import Any, Optional

import torch
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningCLI

from lightning_adv.callbacks.checkpoint import RobustCheckpoint
from lightning_adv.callbacks.collapse import CollapseWarning
from lightning_adv.callbacks.hparams import HparamsMetrics
from lightning_adv.callbacks.resume import FiniteGuard, RankErrorReport, ResumeState, peer_error, this_rank

from .cli_errors import ConfigError, one_line
from .cli_paths import check_config_files, check_legacy_checkpoint
from .cli_logging import (SaveConfigToRunDir, keep_csv_metrics, logger_follows_checkpoint, logger_follows_root,
                          logger_resumes_run, no_hp_metric)
from .quiet import quiet_start
from .shipped import resolve_config_args

__all__ = ["AdvLightningCLI", "main", "cli_main", "check_checkpoint", "TRAINER_DEFAULTS"]

TRAINER_DEFAULTS: dict[str, Any] = {
    "logger": {
        "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
        "init_args": {"save_dir": "runs", "name": "default", "default_hp_metric": False},
    },
    "inference_mode": False,
    "default_root_dir": "runs",
}


class AdvLightningCLI(LightningCLI):
    #: the command-line arguments as given (set by :func:`main`): whether ``save_dir`` was given
    _given_args: list[str] = []

    def add_arguments_to_parser(self, parser: Any) -> None:
        _integers_stay_integers(parser)
        parser.add_lightning_class_args(RobustCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/robust_acc",
                "checkpoint.mode": "max",
                "checkpoint.save_last": True,
                "checkpoint.save_top_k": 1,
                "checkpoint.filename": "best-epoch{epoch:03d}",
                "checkpoint.auto_insert_metric_name": False,
            }
        )

    def _parse_ckpt_path(self) -> None:
        """Check ``--ckpt_path`` before Lightning re-reads the config from its hyperparameters: a
        checkpoint written before objectives were parts says how to convert it; any other file that is
        not a checkpoint of this module class is named as such."""
        sub = self.config.get("subcommand")
        path = self.config[sub].get("ckpt_path") if sub else None
        if path and path not in ("last", "best", "hpc", "registry") and not str(path).startswith("registry:"):
            check_legacy_checkpoint(path)
            model = self.config[sub].get("model")
            check_checkpoint(path, getattr(model, "class_path", None))
        super()._parse_ckpt_path()

    def before_instantiate_classes(self) -> None:
        sub = self.config.get("subcommand")
        cfg = self.config[sub] if sub else self.config
        logger_follows_root(cfg.get("trainer"), self._given_args)
        no_hp_metric(cfg.get("trainer"), self._given_args, _config_texts(self._given_args))
        self._resumed = bool(sub) and logger_resumes_run(sub, cfg, self._given_args) is not None
        if sub and logger_follows_checkpoint(sub, cfg, self._given_args) is not None:
            # the fit's config.yaml stays; this run's config goes next to it
            # checker: LightningCLI's attribute (lightning is not followed: pyproject's mypy section)
            self.save_config_kwargs = {**self.save_config_kwargs, "config_filename": f"config_{sub}.yaml"}  # type: ignore[has-type]
        _check_cross_config(cfg)

    def after_instantiate_classes(self) -> None:
        super().after_instantiate_classes()
        if getattr(self, "_resumed", False):
            keep_csv_metrics(self.trainer.loggers)
        have = {type(c) for c in self.trainer.callbacks}
        # first: checkpoint callbacks must run after the guard
        for cb in (ResumeState(), FiniteGuard(), RankErrorReport(), HparamsMetrics(), CollapseWarning()):
            if type(cb) not in have:
                self.trainer.callbacks.insert(0, cb)

    def _weights_only(self) -> None:
        cfg = self.config_init[self.subcommand]
        if cfg.get("weights_only") is None:
            cfg["weights_only"] = True

    def before_fit(self) -> None:
        self._weights_only()

    def before_validate(self) -> None:
        self._weights_only()

    def before_test(self) -> None:
        self._weights_only()


#: Trainer arguments where an int counts batches and a float is a fraction of the split
BATCH_COUNTS = ("limit_train_batches", "limit_val_batches", "limit_test_batches", "limit_predict_batches",
                "overfit_batches")


def _integers_stay_integers(parser: Any) -> None:
    """``--trainer.limit_val_batches 1`` (or ``1`` in a YAML config) is one batch: Lightning types these
    arguments ``Union[float, int]``, so jsonargparse made ``1`` the float ``1.0``, which Lightning reads
    as 100% of the split. Trying ``int`` first keeps ``1`` an int and ``1.0`` / ``0.5`` floats. The hint is
    ``int | float | None``, not ``Optional[Union[int, float]]``: typing caches unions by equality, which
    ignores order, so the latter can come back as an earlier ``Union[float, int, None]`` (float first)."""
    for action in parser._actions:
        if getattr(action, "dest", "").split(".")[-1] in BATCH_COUNTS and hasattr(action, "_typehint"):
            action._typehint = int | float | None


def check_checkpoint(path: str, class_path: Optional[str] = None) -> dict:
    """Load ``path`` (``weights_only=True``) and check it is a Lightning checkpoint of ``class_path``.

    Raises a one-line :class:`ConfigError` for a missing or unreadable file, a raw state dict
    (use ``--model.init_weights``) or another module class's checkpoint.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"ckpt_path={path!r} does not exist; give a .ckpt written by train.py "
                          f"(e.g. runs/<name>/version_0/checkpoints/last.ckpt)")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same user error
        first = (str(err).strip().splitlines() or [type(err).__name__])[0].split(". ")[0][:160]
        raise ConfigError(f"ckpt_path={path!r} is not a readable PyTorch checkpoint ({type(err).__name__}: {first}); "
                          f"give a .ckpt written by train.py") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "pytorch-lightning_version" not in ckpt:
        raise ConfigError(f"ckpt_path={path!r} is not a Lightning checkpoint (no state_dict / pytorch-lightning_version: "
                          f"a raw state dict?); to start from its weights use --model.init_weights {path}")
    saved = (ckpt.get("hyper_parameters") or {}).get("_class_path")
    if class_path and saved and saved != class_path:
        raise ConfigError(f"ckpt_path={path!r} holds a {saved} checkpoint but the config's model is {class_path}; "
                          f"use the config it was trained with (or --model.init_weights to start from its weights)")
    return ckpt


def _config_texts(given: list[str]) -> list[str]:
    """The text of every ``--config`` file given (for settings a config spells out)."""
    paths = [v for f, v in zip(given, given[1:]) if f in ("--config", "-c")]
    paths += [a.split("=", 1)[1] for a in given if a.startswith("--config=")]
    return [Path(p).read_text() for p in paths if Path(p).is_file()]


def _init(obj: Any) -> Any:
    return obj.get("init_args") if isinstance(obj, dict) else getattr(obj, "init_args", None)


def _check_cross_config(cfg: Any) -> None:
    """Checks that span two sections of the config (no single constructor sees both)."""
    callbacks = (cfg.get("trainer") or {}).get("callbacks") or []
    for i, cb in enumerate(callbacks if isinstance(callbacks, list) else [callbacks]):
        path = cb.get("class_path") if isinstance(cb, dict) else getattr(cb, "class_path", "")
        init = _init(cb)
        if str(path).endswith(("PGDEvaluation", "AttackSuiteEvaluation")) and init is not None \
                and init.get("attacks") is not None and len(init.get("attacks")) == 0:
            raise ConfigError(f"trainer.callbacks[{i}] ({str(path).rsplit('.', 1)[-1]}): attacks=[] evaluates nothing "
                              f"(it would fall back to a default); list at least one attack, or remove the callback")
    model, data = _init(cfg.get("model")), _init(cfg.get("data"))
    if model is not None and data is not None and model.get("ways") is not None and data.get("ways") is not None \
            and model.get("ways") != data.get("ways"):
        raise ConfigError(f"model.ways={model.get('ways')} but data.ways={data.get('ways')}: the few-shot head is "
                          f"sized for the data's tasks; set both to the same value")


_OPTIM_NULL = re.compile(r"^--model\.(?:init_args\.)?optim\.(\w+)$")


def _optim_nulls(args: list[str]) -> list[str]:
    """``--model.optim.milestones null`` as ``--model.optim '{milestones: null}'``: jsonargparse 4.53 refuses a
    ``null`` for a field of a dataclass nested in a subclass-mode model (it validates the string), while the
    mapping form sets the optional field to None and keeps the other fields."""
    out: list[str] = []
    i = 0
    while i < len(args):
        flag, value = (args[i].split("=", 1) + [None])[:2] if args[i].startswith("--") and "=" in args[i] \
            else (args[i], args[i + 1] if i + 1 < len(args) else None)
        assert flag is not None  # split() gives at least one part
        found = _OPTIM_NULL.match(flag)
        if found and value is not None and value.strip().lower() in ("null", "none", "~"):
            out += [flag.rsplit(".", 1)[0], f"{{{found.group(1)}: null}}"]
            i += 1 if "=" in args[i] else 2
            continue
        out.append(args[i])
        i += 1
    return out


def main(args: Optional[list[str]] = None, run: bool = True,
         parser_kwargs: Optional[dict[str, Any]] = None) -> AdvLightningCLI:
    if args is None:
        sys.argv[1:] = _optim_nulls(sys.argv[1:])
    else:
        args = _optim_nulls(list(args))
    given = list(sys.argv[1:] if args is None else args)

    class _CLI(AdvLightningCLI):
        _given_args = given

    return _CLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        trainer_defaults=TRAINER_DEFAULTS,
        seed_everything_default=0,
        save_config_callback=SaveConfigToRunDir,
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
        parser_kwargs=parser_kwargs or {},
    )


def _close_process_group() -> None:
    """A finished DDP run closes its process group before the interpreter exits: left to the interpreter's
    shutdown, gloo's worker threads were seen to end a finished 2-rank test run with ``terminate called
    without an active exception`` (SIGABRT, exit -6) after every result was printed."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def cli_main(args: Optional[list[str]] = None) -> None:
    """``train.py`` and the ``lightning-adv`` command: :func:`main`, with every bad input reported as one
    line (exit status 2) and a non-finite run as one line (exit status 1); ``LIGHTNING_ADV_DEBUG=1``
    adds the traceback. No advertisement or dependency deprecation notice before training
    (:mod:`lightning_adv.quiet`); ``--config configs/X.yaml`` finds the shipped config from any
    directory (:mod:`lightning_adv.shipped`)."""
    try:
        quiet_start()
        argv = resolve_config_args(list(sys.argv[1:] if args is None else args))
        check_config_files(argv)
        if args is None:  # the command line itself (LightningCLI warns when given both args and sys.argv)
            sys.argv[1:] = argv
        main(None if args is None else argv, parser_kwargs={"exit_on_error": False})
        _close_process_group()
    except BaseException as err:  # noqa: BLE001
        line = one_line(err)
        rank = this_rank()
        peer = None if isinstance(err, (KeyboardInterrupt, SystemExit)) else peer_error(rank, 0 if line else 10)
        if peer is not None:  # DDP: another rank failed first; this one saw its peer go
            if os.environ.get("LIGHTNING_ADV_DEBUG"):
                traceback.print_exc()
            print(f"{peer} (this rank {rank} stopped with {type(err).__name__})", file=sys.stderr, flush=True)
            sys.exit(2)
        if line is None or isinstance(err, (KeyboardInterrupt, SystemExit)):
            raise
        if os.environ.get("LIGHTNING_ADV_DEBUG"):
            traceback.print_exc()
        sys.stderr.flush()
        print(line, file=sys.stderr, flush=True)
        sys.exit(1 if "NonFinite" in type(err).__name__ else 2)
