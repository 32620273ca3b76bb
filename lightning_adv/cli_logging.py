"""What ``train.py`` does with loggers (see docs/logging.md): where a run logs, the hparams tab.

* :func:`logger_follows_root`: the logger's ``save_dir`` follows ``--trainer.default_root_dir``;
* :func:`logger_follows_checkpoint`: ``validate`` / ``test --ckpt_path <run>/checkpoints/X.ckpt``
  logs into ``<run>`` (TensorBoard: the same ``save_dir/name/version``, appending to its event
  files; CSV: ``<run>/<subcommand>/metrics.csv``, as a CSV logger would delete the run's own
  ``metrics.csv``), unless the command line gives a logger or a ``default_root_dir``;
* :func:`logger_resumes_run`: ``fit --ckpt_path <run>/checkpoints/last.ckpt`` continues ``<run>``'s
  TensorBoard or CSV version (and with it the checkpoint callback's best score and path;
  :func:`keep_csv_metrics` keeps the CSV rows written before the stop);
* :func:`no_hp_metric`: TensorBoard loggers without the ``hp_metric = -1`` placeholder (the
  :class:`lightning_adv.callbacks.HparamsMetrics` callback logs the real metrics);
* :class:`SaveConfigToRunDir`: the config is saved into :func:`lightning_adv.logging_utils.run_dir`,
  which exists for every logger (Lightning's ``trainer.log_dir`` is None for an MLflow logger
  with a remote tracking URI, and its callback then fails).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

from lightning.pytorch.cli import SaveConfigCallback

from lightning_adv.logging_utils import run_dir

__all__ = ["logger_follows_root", "logger_follows_checkpoint", "logger_resumes_run", "keep_csv_metrics", "no_hp_metric",
           "SaveConfigToRunDir", "DEFAULT_ROOT"]

DEFAULT_ROOT = "runs"
_TB = "TensorBoardLogger"
_CSV = "CSVLogger"


def _loggers(trainer: Any) -> list[Any]:
    loggers = trainer.get("logger") if trainer is not None else None
    return [lg for lg in (loggers if isinstance(loggers, list) else [loggers]) if _init(lg) is not None]


def _init(lg: Any) -> Any:
    return lg.get("init_args") if isinstance(lg, dict) else getattr(lg, "init_args", None)


def _class(lg: Any) -> str:
    path = lg.get("class_path") if isinstance(lg, dict) else getattr(lg, "class_path", "")
    return str(path or "").rsplit(".", 1)[-1]


def _given(given: list[str], *names: str) -> bool:
    return any(a.lstrip("-").split("=", 1)[0].startswith(names) for a in given if a.startswith("--"))


def logger_follows_root(trainer: Any, given: list[str]) -> None:
    """Point the loggers' ``save_dir`` at ``trainer.default_root_dir`` when the user moved the root and gave
    no ``save_dir`` on the command line (the configs' ``save_dir: runs`` is the project default). Only
    loggers that take a ``save_dir`` and keep it at ``runs`` / unset are moved."""
    if trainer is None or any("save_dir" in a for a in given):
        return
    root = trainer.get("default_root_dir")
    if not root or str(root) == DEFAULT_ROOT:
        return
    for lg in _loggers(trainer):
        init = _init(lg)
        if "save_dir" in init and init.get("save_dir") in (None, DEFAULT_ROOT):
            init["save_dir"] = str(root)


def no_hp_metric(trainer: Any, given: list[str], config_texts: list[str]) -> None:
    """``default_hp_metric=False`` on every TensorBoard logger unless a config or the command line sets it."""
    if any("default_hp_metric" in t for t in [*given, *config_texts]):
        return
    for lg in _loggers(trainer):
        if _class(lg) == _TB:
            _init(lg)["default_hp_metric"] = False


def _run_of(ckpt_path: str) -> Optional[Path]:
    """``<run>`` of ``<run>/checkpoints/X.ckpt`` when ``<run>`` was written by a TensorBoard/CSV logger."""
    p = Path(ckpt_path)
    if any(part in ("", ".", "..") for part in (p.parent.parent.name, p.parent.parent.parent.name)):
        p = p.resolve()  # relative to a place inside the run: absolute names
    run = p.parent.parent
    if p.parent.name != "checkpoints" or not run.name or not run.parent.name:
        return None
    if any((run / m).is_file() for m in ("hparams.yaml", "metrics.csv")) or any(run.glob("events.out.tfevents.*")):
        return run
    return None


def logger_follows_checkpoint(sub: str, cfg: Any, given: list[str]) -> Optional[Path]:
    """``validate`` / ``test`` with ``--ckpt_path <run>/checkpoints/X.ckpt``: the TensorBoard loggers log
    into ``<run>`` itself, the CSV loggers into ``<run>/<sub>``. Nothing changes when the command line
    gives a logger (``--trainer.logger...``) or a ``default_root_dir`` (on the command line or a
    config), when the checkpoint is not in a logger's run, or for other loggers. Returns ``<run>``
    when the loggers were moved."""
    trainer = cfg.get("trainer")
    path = cfg.get("ckpt_path")
    if sub not in ("validate", "test") or trainer is None or not path or not Path(str(path)).is_file():
        return None
    if _given(given, "trainer.logger", "trainer.default_root_dir"):
        return None
    if str(trainer.get("default_root_dir") or DEFAULT_ROOT) != DEFAULT_ROOT:
        return None
    run = _run_of(str(path))
    moved = [lg for lg in _loggers(trainer) if _class(lg) in (_TB, _CSV)]
    if run is None or not moved:
        return None
    for lg in moved:
        init = _init(lg)
        init["save_dir"], init["name"] = str(run.parent.parent), run.parent.name
        init["version"] = run.name if _class(lg) == _TB else os.path.join(run.name, sub)
    return run


def logger_resumes_run(sub: str, cfg: Any, given: list[str]) -> Optional[Path]:
    """``fit --ckpt_path <save_dir>/<name>/<version>/checkpoints/X.ckpt``: a TensorBoard logger writing into
    ``<save_dir>/<name>`` continues ``<version>`` (appending to its event files) instead of opening a new
    one, so the run's checkpoints stay in one folder and the checkpoint callback's best score and best
    path come back with its state (Lightning restores them only for the same ``dirpath``). Nothing
    changes when the command line gives a logger or a version, or for other loggers. A CSV logger continues
    the version too; :func:`keep_csv_metrics` keeps the rows its ``metrics.csv`` already holds (Lightning's
    CSV writer deletes that file when it opens a folder that is not empty). Returns the run."""
    trainer = cfg.get("trainer")
    path = cfg.get("ckpt_path")
    if sub != "fit" or trainer is None or not path or not Path(str(path)).is_file() or _given(given, "trainer.logger"):
        return None
    run = _run_of(str(path))
    if run is None:
        return None
    found = None
    for lg in _loggers(trainer):
        init = _init(lg)
        if _class(lg) not in (_TB, _CSV) or init.get("version") is not None:
            continue
        name = init.get("name")
        base = Path(str(init.get("save_dir") or ".")) / (str(name) if name else "")
        if base.resolve() == run.parent.resolve():
            init["version"] = run.name
            found = run
    return found


def keep_csv_metrics(loggers: list[Any]) -> None:
    """For a resumed run (:func:`logger_resumes_run`): open each CSV logger's writer without losing the rows
    of the ``metrics.csv`` it continues. The writer deletes the file when it starts in a folder that is not
    empty; the rows are put back and the writer knows their columns, so later rows are appended (a new
    column rewrites the file with the old rows kept, as the writer does within one run)."""
    from lightning.fabric.utilities.rank_zero import rank_zero_only
    from lightning.pytorch.loggers import CSVLogger

    for lg in loggers:
        if not isinstance(lg, CSVLogger) or rank_zero_only.rank != 0:
            continue
        path = Path(lg.log_dir) / "metrics.csv"
        if not path.is_file():
            continue
        text = path.read_text()
        header = text.splitlines()[0].split(",") if text.strip() else []
        writer = lg.experiment  # deletes the file
        path.write_text(text)
        writer.metrics_keys = sorted(set(writer.metrics_keys) | set(header))


class SaveConfigToRunDir(SaveConfigCallback):
    """Lightning's config saving, into :func:`~lightning_adv.logging_utils.run_dir` (any logger), on rank 0."""

    def __init__(self, parser: Any, config: Any, config_filename: str = "config.yaml", overwrite: bool = False,
                 multifile: bool = False, save_to_log_dir: bool = True) -> None:
        super().__init__(parser, config, config_filename=config_filename, overwrite=overwrite, multifile=multifile,
                         save_to_log_dir=False)

    def save_config(self, trainer: Any, pl_module: Any, stage: str) -> None:
        out = run_dir(trainer)
        os.makedirs(out, exist_ok=True)
        path = os.path.join(out, self.config_filename)
        if os.path.isfile(path) and not self.overwrite:
            raise RuntimeError(f"{path} exists; the CLI saves configs with overwrite=True (or remove the file)")
        self.parser.save(self.config, path, skip_none=False, overwrite=self.overwrite, multifile=self.multifile)
