"""Robust accuracy under a list of attacks during validation and test: the light preset of the suite."""
from __future__ import annotations

from typing import Optional, Sequence

import lightning.pytorch as pl
import torch
from torch import Tensor

from lightning_adv.attacks import PGD, Attack, AttackSuite
from lightning_adv.logging_utils import log_image

from ._suite_common import SuiteCallback

__all__ = ["PGDEvaluation", "default_eval_attacks"]


def default_eval_attacks() -> list[PGD]:
    """The thesis' evaluation attack: PGD-20, Linf, eps 8/255, step 2/255, random start."""
    return [PGD(eps=8 / 255, steps=20, step_size=2 / 255, bn_mode="eval")]


def _coerce_list(attacks: Optional[list[PGD]], param: str) -> list[PGD]:
    return [PGD.coerce(a, param) for a in (attacks or [])]


class PGDEvaluation(SuiteCallback):
    """Robust accuracy on the validation and/or test set for a list of attacks.

    A preset of the attack suite (:class:`lightning_adv.attacks.AttackSuite` with
    ``cascade=False, sanity_checks=False, attack_misclassified=True``): every attack runs
    on every example, no expensive checks. For every attack ``a`` it logs
    ``<stage>/robust_acc/<a.label>`` and ``<stage>/robust_acc``, the per-example worst case
    (an example counts only if it is classified correctly clean and after every attack).
    Records of all DDP ranks are gathered and de-duplicated by example index; every rank runs
    every attack on every batch, so SyncBatchNorm sees the same forwards on each rank.
    Few-shot modules are evaluated per task through the learner adapted on the clean
    support (``_ci95`` metrics over episodes too).

    With an :class:`~lightning_adv.callbacks.AttackSuiteEvaluation` in the same trainer, the test attacks
    are handed to it (they run in its suite and its worst case covers them) and this
    callback does not evaluate the test set itself: ``test/robust_acc`` is logged once.

    An image grid (``val/adversarial_examples``, to every logger: see :mod:`lightning_adv.logging_utils`) shows, for
    ``num_images`` fixed validation images (the first
    of the first batch), the clean image, the adversarial image of the first attack and
    the perturbation amplified to the full [0, 1] range.

    Args:
        attacks: attack configs (default: PGD-20 Linf 8/255, step 2/255).
        every_n_epochs: run on validation every n epochs and at the last epoch (test, ``validate``
            and ``fast_dev_run``: always).
        on_validation, on_test: which stages to evaluate.
        limit_batches: attack only the first n batches of each evaluation (None: all).
        attack_precision: ``fp32`` (default: attacks with autocast off under any Trainer precision)
            or ``trainer`` (under the Trainer's autocast; docs/precision.md).
        num_images: images in the image grid (any logger) (0 disables it).
        test_attacks: more attacks at test time only (few-shot table 5.11: PGD-20 with 20 restarts).
    """

    hands_test_attacks = True

    def __init__(
        self,
        attacks: Optional[list[PGD]] = None,
        every_n_epochs: int = 1,
        on_validation: bool = True,
        on_test: bool = True,
        limit_batches: Optional[int] = None,
        num_images: int = 8,
        test_attacks: Optional[list[PGD]] = None,
        attack_precision: str = "fp32",
    ) -> None:
        super().__init__(limit_batches=limit_batches, attack_precision=attack_precision)
        attacks = _coerce_list(attacks if attacks is not None else default_eval_attacks(), "PGDEvaluation.attacks")
        if not attacks:
            raise ValueError("PGDEvaluation.attacks is empty; give at least one attack or drop the callback")
        test_attacks = _coerce_list(test_attacks, "PGDEvaluation.test_attacks")
        labels = [a.label for a in attacks + test_attacks]
        if len(set(labels)) != len(labels):
            raise ValueError(f"PGDEvaluation.attacks have duplicate names {labels}; set `name` on each attack")
        if every_n_epochs < 1:
            raise ValueError(f"PGDEvaluation.every_n_epochs must be >= 1, got every_n_epochs={every_n_epochs}")
        if num_images < 0:
            raise ValueError(f"PGDEvaluation.num_images must be >= 0, got num_images={num_images}")
        self.attacks, self.test_attacks = attacks, test_attacks
        self.every_n_epochs = every_n_epochs
        self.on_validation = on_validation
        self.on_test = on_test
        self.num_images = num_images
        self.val_suite = self._preset(attacks)
        self.test_suite = self._preset(attacks + test_attacks)

    @staticmethod
    def _preset(attacks: Sequence[Attack]) -> AttackSuite:
        return AttackSuite(list(attacks), cascade=False, sanity_checks=False, attack_misclassified=True)

    def test_stage_attacks(self) -> list[Attack]:
        """The attacks of the test stage (what an AttackSuiteEvaluation takes over)."""
        return list(self.test_suite.attacks) if self.on_test else []

    # ----------------------------------------------------------------- schedule
    def _stage_suite(self, trainer: pl.Trainer, stage: str) -> Optional[AttackSuite]:
        if stage == "test":
            taken = any(isinstance(cb, SuiteCallback) and cb.takes_test_attacks for cb in trainer.callbacks)
            return self.test_suite if self.on_test and not taken else None
        if not self.on_validation or trainer.sanity_checking:
            return None
        if trainer.state.fn == "validate" or trainer.fast_dev_run:
            return self.val_suite
        epoch = trainer.current_epoch + 1
        last = trainer.max_epochs is not None and epoch >= trainer.max_epochs
        return self.val_suite if last or epoch % self.every_n_epochs == 0 else None

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._finish(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._finish(trainer, pl_module, "test")

    # ----------------------------------------------------------------- images
    def _wants_adversarials(self, stage: str) -> bool:
        return stage == "val" and self.num_images > 0

    def _show_adversarials(self, trainer: pl.Trainer, x: Tensor, adv: dict[str, tuple[Tensor, Tensor]]) -> None:
        if not trainer.is_global_zero or self.attacks[0].label not in adv:
            return
        if not trainer.loggers:
            return
        from torchvision.utils import make_grid

        pos, x_adv = adv[self.attacks[0].label]
        n = min(self.num_images, pos.shape[0])
        clean, adv_x = x[pos[:n]].detach().float().cpu(), x_adv[:n].detach().float().cpu()
        delta = adv_x - clean
        scale = delta.flatten(1).abs().max(dim=1).values.clamp_min(1e-12).view(-1, *([1] * (delta.dim() - 1)))
        amplified = 0.5 + 0.5 * delta / scale
        grid = make_grid(torch.cat([clean, adv_x, amplified]), nrow=n, padding=1, pad_value=1.0)
        log_image(trainer, "val/adversarial_examples", grid, step=trainer.global_step)
