"""Images, figures and text to every Lightning logger of a run, not only TensorBoard.

The evaluator callbacks (adversarial example grids), the chapter-6 analysis callbacks (NTK,
effective rank figures), the robustness report (accuracy-vs-eps curve) and the order-book
plots write through :func:`log_image`, :func:`log_figure` and :func:`log_text`, which
dispatch on each logger of ``trainer.loggers`` (rank zero only):

* ``TensorBoardLogger`` (or any logger whose ``experiment`` is a ``SummaryWriter``-like object
  with ``add_image`` / ``add_figure`` / ``add_text``): those methods;
* ``CSVLogger``: files under the logger's ``log_dir``: ``images/<key>_step<k>.png`` for images
  and figures, ``text/<key>_step<k>.txt`` for text (``/`` in a key becomes ``_``);
* ``WandbLogger``: ``log_image`` / ``log_text`` (wandb is only imported by Lightning when used);
* ``MLFlowLogger`` (or any logger with a ``run_id`` whose ``experiment`` is an ``MlflowClient``-like
  object): ``experiment.log_image`` / ``log_figure`` / ``log_text`` as artifacts
  ``images/<key>_step<k>.png``, ``text/<key>_step<k>.txt`` of the logger's run;
* any other logger: skipped, with one warning per logger type.

:func:`run_dir` is the run's directory for files (JSON reports, NTK snapshots) that works for
every logger: the first TensorBoard/CSV logger's ``log_dir``, else
``<default_root_dir>/<name>/<version>`` of the first logger, else ``default_root_dir``.
Unlike ``trainer.log_dir`` it is no collective, so it may be called on rank zero alone.
"""
from __future__ import annotations

import io
import os
import re
from typing import Any, Iterable, Optional, Union

import numpy as np
import torch
from lightning.pytorch.loggers import CSVLogger, Logger, MLFlowLogger, TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

__all__ = ["log_image", "log_figure", "log_text", "run_dir", "file_key"]

_WARNED: set[tuple[type, str]] = set()
Target = Union[Any, Logger, Iterable[Logger], None]


def _loggers(target: Target) -> tuple[list[Any], Optional[int]]:
    """(loggers, default step): a Trainer's loggers on global rank zero (none elsewhere), a logger, a list."""
    if target is None:
        return [], None
    if hasattr(target, "loggers") and hasattr(target, "is_global_zero"):  # a Trainer
        # checker: a Trainer (tested above by its attributes)
        return (list(target.loggers) if target.is_global_zero else []), int(target.global_step)  # type: ignore[union-attr]
    if isinstance(target, (list, tuple)):
        return list(target), None
    return [target], None


def _kind(logger: Any, method: str) -> str:
    """``tensorboard`` / ``csv`` / ``wandb`` / ``mlflow`` / ``other`` for ``method`` (image, figure, text)."""
    if isinstance(logger, TensorBoardLogger):
        return "tensorboard"
    if isinstance(logger, CSVLogger):
        return "csv"
    if isinstance(logger, WandbLogger):
        return "wandb"
    if isinstance(logger, MLFlowLogger):
        return "mlflow"
    exp = getattr(logger, "experiment", None)
    if callable(getattr(exp, f"add_{method}", None)):
        return "tensorboard"
    if getattr(logger, "run_id", None) is not None and callable(getattr(exp, f"log_{method}", None)):
        return "mlflow"
    return "other"


def _skip(logger: Any, method: str) -> None:
    key = (type(logger), method)
    if key not in _WARNED:
        _WARNED.add(key)
        rank_zero_warn(f"{type(logger).__name__} cannot take {method}s (supported: TensorBoard, CSV, W&B, MLflow "
                       f"loggers); the {method}s of this run are not sent to it")


def file_key(key: str) -> str:
    """``key`` as a file name part: ``val/adversarial_examples`` -> ``val_adversarial_examples``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", key).strip("_") or "item"


def _chw(image: Tensor) -> Tensor:
    """A float CHW image in [0, 1] on the CPU (HW and uint8 accepted)."""
    img = torch.as_tensor(image).detach().cpu()
    if img.dim() == 2:
        img = img.unsqueeze(0)
    if img.dim() != 3 or img.shape[0] not in (1, 3, 4):
        raise ValueError(f"log_image: image of shape {tuple(img.shape)}; give a CHW image with 1, 3 or 4 channels")
    img = img.float() / 255.0 if img.dtype == torch.uint8 else img.float()
    return img.clamp(0.0, 1.0)


def _hwc_uint8(img: Tensor) -> np.ndarray:
    arr = (img * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return arr[:, :, 0] if arr.shape[2] == 1 else arr


def _figure_rgb(fig: Any) -> np.ndarray:
    """The figure rendered as an RGB uint8 array (H, W, 3)."""
    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"))


def _csv_path(logger: Any, folder: str, key: str, step: int, ext: str) -> str:
    path = os.path.join(str(logger.log_dir), folder, f"{file_key(key)}_step{step}.{ext}")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return path


def _write_png(arr: np.ndarray, path: str) -> None:
    from PIL import Image

    Image.fromarray(arr).save(path, format="PNG")


def log_image(target: Target, key: str, image: Tensor, step: Optional[int] = None) -> None:
    """Send one CHW image (float in [0, 1], or uint8) to every logger of ``target`` (see the module doc)."""
    loggers, default = _loggers(target)
    if not loggers:
        return
    img = _chw(image)
    step = int(step if step is not None else (default or 0))
    for lg in loggers:
        kind = _kind(lg, "image")
        if kind == "tensorboard":
            lg.experiment.add_image(key, img, global_step=step)
        elif kind == "csv":
            _write_png(_hwc_uint8(img), _csv_path(lg, "images", key, step, "png"))
        elif kind == "wandb":
            lg.log_image(key=key, images=[_hwc_uint8(img)], step=step)
        elif kind == "mlflow":
            lg.experiment.log_image(lg.run_id, _hwc_uint8(img), artifact_file=f"images/{file_key(key)}_step{step}.png")
        else:
            _skip(lg, "image")


def log_figure(target: Target, key: str, figure: Any, step: Optional[int] = None, close: bool = True) -> None:
    """Send a matplotlib figure to every logger of ``target``; close it afterwards unless ``close=False``."""
    try:
        loggers, default = _loggers(target)
        step = int(step if step is not None else (default or 0))
        for lg in loggers:
            kind = _kind(lg, "figure")
            if kind == "tensorboard":
                lg.experiment.add_figure(key, figure, global_step=step, close=False)
            elif kind == "csv":
                _write_png(_figure_rgb(figure), _csv_path(lg, "images", key, step, "png"))
            elif kind == "wandb":
                lg.log_image(key=key, images=[_figure_rgb(figure)], step=step)
            elif kind == "mlflow":
                lg.experiment.log_figure(lg.run_id, figure, artifact_file=f"images/{file_key(key)}_step{step}.png")
            else:
                _skip(lg, "figure")
    finally:
        if close:
            import matplotlib.pyplot as plt

            plt.close(figure)


def log_text(target: Target, key: str, text: str, step: Optional[int] = None) -> None:
    """Send a text (markdown for TensorBoard) to every logger of ``target``."""
    loggers, default = _loggers(target)
    step = int(step if step is not None else (default or 0))
    for lg in loggers:
        kind = _kind(lg, "text")
        if kind == "tensorboard":
            lg.experiment.add_text(key, text, global_step=step)
        elif kind == "csv":
            with open(_csv_path(lg, "text", key, step, "txt"), "w") as f:
                f.write(text)
        elif kind == "wandb":
            lg.log_text(key=key, columns=["text"], data=[[text]], step=step)
        elif kind == "mlflow":
            lg.experiment.log_text(lg.run_id, text, artifact_file=f"text/{file_key(key)}_step{step}.txt")
        else:
            _skip(lg, "text")


def run_dir(trainer: Any) -> str:
    """The run's directory for files: the first TensorBoard/CSV logger's ``log_dir``, else
    ``<default_root_dir>/<name>/<version>`` of the first logger (W&B, MLflow, others), else
    ``default_root_dir``. No collective (unlike ``trainer.log_dir``): rank zero's answer is the one
    that counts, as only rank zero writes."""
    loggers = list(getattr(trainer, "loggers", []) or [])
    for lg in loggers:
        if isinstance(lg, (TensorBoardLogger, CSVLogger)):
            return str(lg.log_dir)
    root = str(trainer.default_root_dir)
    if not loggers:
        return root
    name, version = getattr(loggers[0], "name", None), getattr(loggers[0], "version", None)
    if not name or version is None:
        return root
    version = f"version_{version}" if isinstance(version, int) else str(version)
    return os.path.join(root, file_key(str(name)), file_key(version))
