"""Adversarial training: PGD-AT (Madry et al.), TRADES (Zhang et al.) and free AT (Shafahi et al.)."""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..attacks import PGD, kl_loss
from .classifier import Classifier
from .optim import OptimConfig
from .regularizers import Regularizer
from .robust import RobustTrainingMixin, check_free_args, check_unused_attack_args

__all__ = ["AdvTraining", "METHODS"]

METHODS = ("pgd", "trades", "free")


class AdvTraining(RobustTrainingMixin, Classifier):
    """Adversarial training of a registered architecture.

    Methods:

    * ``pgd`` (Madry et al.): minimise the cross-entropy at ``x_adv = attack(x)``.
    * ``trades`` (Zhang et al.): ``CE(f(x), y) + beta * KL(f(x) || f(x_adv)) / B``
      (KL summed over classes, mean over the batch as in the TRADES code), ``x_adv``
      maximising the KL to the clean prediction (set ``attack.loss: kl``, the default of
      the TRADES configs; with ``loss: ce`` the attack maximises the cross-entropy).
    * ``free`` (Shafahi et al.): m = ``free_replays`` replays of each batch with a
      persistent perturbation updated by the same backward (manual optimisation);
      ``attack.eps``/``attack.norm`` give the ball, ``free_step_size`` (default eps) the
      step. Divide ``max_epochs`` and ``optim.milestones`` by m in the config.

    The training attack defaults to the thesis': Linf, eps 8/255, 10 steps of 2/255,
    random start, the model in train mode while attacking (BN batch statistics, as in the
    authors' code; ``attack.bn_mode: eval`` attacks the eval-mode model instead).

    Logged (besides :class:`Classifier`'s): ``train/adv_acc`` (accuracy on the training
    adversarial examples) and ``train/acc`` (clean accuracy, from an extra no-grad
    eval-mode forward when ``track_clean_acc``).
    """

    def __init__(
        self,
        arch: str = "small_cnn",
        num_classes: int = 10,
        in_channels: int = 3,
        mean: Optional[list[float]] = None,
        std: Optional[list[float]] = None,
        arch_kwargs: Optional[dict[str, Any]] = None,
        optim: OptimConfig = OptimConfig(),
        init_weights: Optional[str] = None,
        method: str = "pgd",
        attack: PGD = PGD(bn_mode="train"),
        trades_beta: float = 6.0,
        free_replays: int = 4,
        free_step_size: Optional[float] = None,
        track_clean_acc: bool = True,
        regularizer: Optional[Regularizer] = None,
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"method={method!r} is not one of {METHODS}")
        attack = PGD.coerce(attack)
        if method == "free":
            check_unused_attack_args(AdvTraining, attack, ("eps", "norm"),
                                     "free training (its perturbation steps by free_step_size once per replay)")
        if trades_beta < 0:
            raise ValueError(f"trades_beta must be >= 0, got trades_beta={trades_beta}")
        check_free_args(free_replays, free_step_size, check_replays=method == "free")
        super().__init__(arch=arch, num_classes=num_classes, in_channels=in_channels, mean=mean, std=std,
                         arch_kwargs=arch_kwargs, optim=optim, init_weights=init_weights,
                         regularizer=regularizer)
        self.hparams["attack"] = attack.config()
        self.attack = attack
        self.method = method
        self.trades_beta = float(trades_beta)
        self._init_robust(track_clean_acc)
        if method == "free":
            self._init_free(attack.threat, free_replays, free_step_size)

    # ---------------------------------------------------------------- steps
    def training_step(self, batch: Any, batch_idx: int) -> Optional[Tensor]:
        x, y = batch
        if self.method == "free":
            return self._free_at_step(x, y)
        if self.method == "trades":
            logits_clean = self.model(x)
            target = F.softmax(logits_clean.detach(), dim=1) if self.attack.loss == "kl" else y
            x_adv = self.attack(self.model, x, target)
            logits_adv = self.model(x_adv)
            robust = kl_loss(logits_adv, F.softmax(logits_clean, dim=1)).mean()
            loss = F.cross_entropy(logits_clean, y) + self.trades_beta * robust
            self._log_clean_acc(logits_clean, y)
            self.log("train/trades_kl", robust.detach(), on_step=False, on_epoch=True)
        else:
            if self.attack.loss == "kl":
                with torch.no_grad():
                    target: Any = F.softmax(self.model(x), dim=1)
            else:
                target = y
            x_adv = self.attack(self.model, x, target)
            logits_adv = self.model(x_adv)
            loss = F.cross_entropy(logits_adv, y)
            self._eval_clean_acc(x, y)
        self._log_adv_step(loss, logits_adv, y)
        return loss

    def _free_at_step(self, x: Tensor, y: Tensor) -> None:
        def closure(x_in: Tensor) -> tuple[Tensor, Tensor]:
            logits = self.model(x_in)
            return F.cross_entropy(logits, y), logits

        self._free_step(x, y, closure)
