"""Randomized smoothing certification (Cohen et al. 2019) of the test set, as a callback of ``trainer.test``.

    python train.py test --config configs/smoothing_digits.yaml --config configs/eval_smoothing.yaml \\
        --ckpt_path runs/smoothing_digits/version_0/checkpoints/last.ckpt

For the first ``limit_examples`` test examples (per rank) it runs CERTIFY
(:func:`lightning_adv.certify.smoothing_certify`) on the LightningModule's forward in eval
mode and logs ``test/smoothing/certified_acc@<r>`` for each radius ``r``: the fraction
predicted correctly with a certified L2 radius >= r (abstentions count as wrong), and
``test/smoothing/abstain``. The certificate holds for the *smoothed* classifier, not the
base model the attack suite attacks, so it is not a row of the suite.
"""
from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info

from lightning_adv.attacks.pgd import _as_normal, module_mode
from lightning_adv.certify import ABSTAIN, check_smoothing, smoothing_certify

__all__ = ["SmoothingCertification"]


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
                 radii: list[float] = [0.0, 0.25, 0.5, 1.0], limit_examples: int = 500,
                 batch_size: int = 1000) -> None:
        super().__init__()
        check_smoothing(sigma, alpha, n, n0, batch_size)
        if not radii or any(r < 0 for r in radii):
            raise ValueError(f"SmoothingCertification.radii must be non-empty and >= 0, got radii={radii}")
        if limit_examples < 1:
            raise ValueError(f"SmoothingCertification.limit_examples must be >= 1, got {limit_examples}")
        self.sigma, self.n0, self.n, self.alpha = float(sigma), n0, n, float(alpha)
        self.radii, self.limit_examples, self.batch_size = [float(r) for r in radii], limit_examples, batch_size
        self.results: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.results = []

    def on_test_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        done = sum(int(r[2].shape[0]) for r in self.results)
        if done >= self.limit_examples:
            return
        x, y = _as_normal(batch[0][:self.limit_examples - done]), _as_normal(batch[1][:self.limit_examples - done])
        with torch.inference_mode(False), module_mode(pl_module, "eval"):
            res = smoothing_certify(pl_module, x, int(pl_module.hparams.num_classes), self.sigma, self.n0, self.n,
                                    self.alpha, self.batch_size)
        self.results.append((res.prediction, res.radius, y.cpu()))

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.results:
            return
        pred, radius, y = (torch.cat(t) for t in zip(*self.results))
        lines = [f"randomized smoothing (sigma {self.sigma:g}, n {self.n}, alpha {self.alpha:g}), {len(y)} examples"]
        for r in self.radii:
            acc = ((pred == y) & (radius >= r)).float().mean()
            pl_module.log(f"test/smoothing/certified_acc@{r:g}", acc, sync_dist=True)
            lines.append(f"  certified L2 accuracy at radius {r:g}: {float(acc):.2%}")
        pl_module.log("test/smoothing/abstain", (pred == ABSTAIN).float().mean(), sync_dist=True)
        rank_zero_info("\n".join(lines))
