"""Randomized smoothing certification (Cohen et al. 2019) of the test set, as a callback of ``trainer.test``.

    python train.py test --config configs/smoothing_digits.yaml --config configs/eval_smoothing.yaml \\
        --ckpt_path runs/smoothing_digits/version_0/checkpoints/last.ckpt

For the first ``limit_examples`` test examples (per rank) it runs CERTIFY
(:func:`lightning_adv.certify.smoothing_certify`) on the LightningModule's forward in eval
mode and logs ``test/smoothing/certified_acc@<r>`` for each radius ``r``: the fraction
predicted correctly with a certified L2 radius >= r (abstentions count as wrong), and
``test/smoothing/abstain``. The certificate holds for the *smoothed* classifier, not the
base model the attack suite attacks, so it is not a row of the suite.

Rank zero also writes the certified-accuracy-vs-L2-radius curve into the run's directory (or
``output_dir``), on the grid ``0, curve_step, 2 curve_step, ...`` up to the largest radius
certified, plus ``radii``:

* ``smoothing_curve.json``: ``{"method": "randomized_smoothing", "sigma", "n0", "n", "alpha",
  "examples", "abstain", "checkpoint", "radii": [...], "certified_acc": [...],
  "at": {"<r>": acc for r in radii}, "per_example": {"label", "prediction", "radius"}}``
  (prediction -1 = abstain, radius 0 there);
* ``smoothing_curve.csv``: ``radius,certified_acc``, one row per grid radius;
* ``smoothing_curve.png``: the curve.

``scripts/smoothing_curve.py`` draws the curves of several runs (one per sigma) together.
"""
from __future__ import annotations

import csv
import json
import os
from typing import Any, Optional

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info

from lightning_adv.attacks import as_normal, module_mode
from lightning_adv.certify import ABSTAIN, SmoothingResult, check_smoothing, smoothing_certify
from lightning_adv.logging_utils import run_dir
from lightning_adv.validation import check_int, check_real

__all__ = ["SmoothingCertification", "write_smoothing_curve"]

CURVE_FILE = "smoothing_curve"


def write_smoothing_curve(data: dict, directory: str) -> list[str]:
    """``smoothing_curve.{json,csv,png}`` of one run's ``data`` (the JSON schema of the module docstring)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(directory, exist_ok=True)
    base = os.path.join(directory, CURVE_FILE)
    with open(base + ".json", "w") as f:
        json.dump(data, f, indent=2)
    with open(base + ".csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["radius", "certified_acc"])
        w.writerows(zip(data["radii"], data["certified_acc"]))
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(data["radii"], data["certified_acc"], drawstyle="steps-post", label=f"sigma = {data['sigma']:g}")
    ax.set(xlabel="L2 radius", ylabel="certified accuracy", ylim=(0, 1),
           title=f"randomized smoothing, n = {data['n']}, {data['examples']} examples")
    ax.legend()
    fig.tight_layout()
    fig.savefig(base + ".png", dpi=120)
    plt.close(fig)
    return [base + ".json", base + ".csv", base + ".png"]


class SmoothingCertification(Callback):
    """Certified L2 accuracy of the smoothed classifier at ``radii``.

    Args:
        sigma: noise standard deviation (pixel units; the base model's training noise).
        n0, n, alpha: CERTIFY's selection samples, estimation samples and failure probability.
        radii: the L2 radii of the reported certified accuracies.
        limit_examples: certify only the first examples of the test set (CERTIFY costs n forwards each).
        batch_size: noisy copies per forward.
    """

    def __init__(self, sigma: float = 0.25, n0: int = 100, n: int = 10000, alpha: float = 0.001,
                 radii: list[float] = [0.0, 0.25, 0.5, 1.0],  # noqa: B006 (copied below, never mutated)
                 limit_examples: int = 500,
                 batch_size: int = 1000, curve_step: float = 0.05, output_dir: Optional[str] = None) -> None:
        super().__init__()
        check_smoothing(sigma, alpha, n, n0, batch_size)
        if not radii or any(r < 0 for r in radii):
            raise ValueError(f"SmoothingCertification.radii must be non-empty and >= 0, got radii={radii}")
        check_int("SmoothingCertification.limit_examples", limit_examples, 1)
        check_real("SmoothingCertification.curve_step", curve_step, positive=True,
                   hint="the radius grid of the curve, e.g. 0.05")
        self.sigma, self.n0, self.n, self.alpha = float(sigma), n0, n, float(alpha)
        self.radii, self.limit_examples, self.batch_size = [float(r) for r in radii], limit_examples, batch_size
        self.curve_step, self.output_dir = float(curve_step), output_dir
        self.paths: list[str] = []
        self.results: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.results = []

    def on_test_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        done = sum(int(r[2].shape[0]) for r in self.results)
        if done >= self.limit_examples:
            return
        x, y = as_normal(batch[0][:self.limit_examples - done]), as_normal(batch[1][:self.limit_examples - done])
        with torch.inference_mode(False), module_mode(pl_module, "eval"):
            res = smoothing_certify(pl_module, x, int(pl_module.hparams.num_classes), self.sigma, self.n0, self.n,
                                    self.alpha, self.batch_size)
        self.results.append((res.prediction, res.radius, y.cpu()))

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.results:
            return
        pred, radius, y = (torch.cat(t) for t in zip(*self.results))
        lines = [f"randomized smoothing (sigma {self.sigma:g}, n {self.n}, alpha {self.alpha:g}), {len(y)} examples"]
        for r, acc in zip(self.radii, SmoothingResult(pred, radius).curve(y, self.radii)):
            pl_module.log(f"test/smoothing/certified_acc@{r:g}", acc, sync_dist=True)
            lines.append(f"  certified L2 accuracy at radius {r:g}: {acc:.2%}")
        pl_module.log("test/smoothing/abstain", (pred == ABSTAIN).float().mean(), sync_dist=True)
        if trainer.global_rank == 0:
            self.paths = write_smoothing_curve(self.curve_data(SmoothingResult(pred, radius), y, trainer),
                                               self.output_dir or run_dir(trainer))
            lines.append(f"  curve written to {', '.join(self.paths)}")
        rank_zero_info("\n".join(lines))

    def curve_data(self, res: SmoothingResult, y: torch.Tensor, trainer: Optional[pl.Trainer] = None) -> dict:
        """The content of ``smoothing_curve.json`` (module docstring)."""
        top = max(float(res.radius.max()), *self.radii)
        grid = np.round(np.arange(0.0, top + self.curve_step, self.curve_step), 6).tolist()
        radii = sorted(set(grid) | set(self.radii))
        ckpt = None if trainer is None or trainer.ckpt_path is None else str(trainer.ckpt_path)
        return {"method": "randomized_smoothing", "sigma": self.sigma, "n0": self.n0, "n": self.n,
                "alpha": self.alpha, "examples": int(len(y)), "abstain": float((res.prediction == ABSTAIN).float().mean()),
                "checkpoint": ckpt, "radii": radii, "certified_acc": res.curve(y, radii),
                "at": {f"{r:g}": acc for r, acc in zip(self.radii, res.curve(y, self.radii))},
                "per_example": {"label": y.tolist(), "prediction": res.prediction.tolist(),
                                "radius": [round(float(r), 6) for r in res.radius]}}
