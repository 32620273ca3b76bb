"""Optimiser and learning-rate schedule as one typed, YAML-readable config."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterable, Optional

import torch

from ..validation import check_int, check_real

__all__ = ["OptimConfig", "build_optimizer", "build_scheduler", "optimizers_and_schedule"]

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULERS = ("multistep", "cosine", "constant")


@dataclass(frozen=True)
class OptimConfig:
    """Optimiser and schedule. Defaults are the thesis' chapter-4 recipe.

    SGD, lr 0.1, momentum 0.9, weight decay 2e-4, no Nesterov; the learning rate is
    multiplied by ``gamma`` at each epoch in ``milestones`` (thesis: 100 and 150 of 200).
    With free training (m replays) divide ``milestones`` and ``max_epochs`` by m in the
    config. Schedules step once per epoch.

    ``lr_factors`` (multistep only): the LR is the initial LR times ``lr_factors[i]`` from
    milestone ``i`` on, instead of powers of ``gamma`` (the AQ authors' LambdaLR:
    [0.06, 0.012, 0.0024]).
    """

    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 2e-4
    nesterov: bool = False
    scheduler: str = "multistep"
    milestones: Optional[list[int]] = None
    gamma: float = 0.1
    lr_factors: Optional[list[float]] = None

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optim.optimizer={self.optimizer!r} is not one of {OPTIMIZERS}")
        for name in ("lr", "momentum", "weight_decay", "gamma"):  # the type first: lr="0.1" names lr
            object.__setattr__(self, name, check_real(f"optim.{name}", getattr(self, name), positive=name == "lr"))
        if self.lr > 10:
            raise ValueError(f"optim.lr={self.lr:g} is far above any learning rate that trains (thesis: 0.1 with SGD, "
                             f"1e-3 with Adam); the weights would diverge to NaN. Use a value <= 10")
        check_real("optim.momentum", self.momentum, minimum=0.0, maximum=1.0, below_max=True)
        check_real("optim.weight_decay", self.weight_decay, minimum=0.0)
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            raise ValueError("optim.nesterov=true needs optimizer 'sgd' with momentum > 0")
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"optim.scheduler={self.scheduler!r} is not one of {SCHEDULERS}")
        if self.milestones is not None:
            ms = list(self.milestones)
            ms = [check_int(f"optim.milestones[{i}]", m, 1, "positive epochs", whole_floats=True) for i, m in enumerate(ms)]
            if any(b <= a for a, b in zip(ms, ms[1:])):
                raise ValueError(
                    f"optim.milestones must be strictly increasing positive epochs, got milestones={ms}"
                )
            object.__setattr__(self, "milestones", [int(m) for m in ms])  # frozen: normalised once, here
        check_real("optim.gamma", self.gamma, positive=True, maximum=1.0, hint="the factor of each LR step")
        if self.lr_factors is not None:
            factors = [float(f) for f in self.lr_factors]
            if self.scheduler != "multistep" or len(factors) != len(self.milestones or []) or min(factors, default=1) <= 0:
                raise ValueError(f"optim.lr_factors={self.lr_factors} must hold one positive LR multiplier per "
                                 f"milestone (optim.milestones={self.milestones}) of the multistep scheduler; "
                                 f"set lr_factors: null to use optim.gamma")
            object.__setattr__(self, "lr_factors", factors)

    @classmethod
    def coerce(cls, value: Any) -> "OptimConfig":
        """Accept an OptimConfig, a dict (as stored in a checkpoint's hparams) or None."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, dict):
            return cls(**value)
        raise ValueError(f"optim must be an OptimConfig or a mapping, got {type(value).__name__}")

    def to_dict(self) -> dict:
        return asdict(self)


def build_optimizer(params: Iterable[torch.nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                               nesterov=cfg.nesterov)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig,
                    max_epochs: Optional[int]) -> Optional[torch.optim.lr_scheduler.LRScheduler]:
    if cfg.scheduler == "constant":
        return None
    if cfg.scheduler == "multistep" and cfg.lr_factors is not None:
        milestones, factors = list(cfg.milestones or []), [1.0] + list(cfg.lr_factors)
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: factors[sum(epoch >= m for m in milestones)])
    if cfg.scheduler == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=cfg.milestones or [], gamma=cfg.gamma)
    if not max_epochs or max_epochs < 1:
        raise ValueError("optim.scheduler='cosine' needs trainer.max_epochs >= 1")
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max_epochs)


def optimizers_and_schedule(params: Iterable[torch.nn.Parameter], cfg: OptimConfig, max_epochs: Optional[int]) -> Any:
    """What ``configure_optimizers`` returns for every module: the optimiser and its per-epoch schedule."""
    optimizer = build_optimizer(params, cfg)
    scheduler = build_scheduler(optimizer, cfg, max_epochs)
    if scheduler is None:
        return optimizer
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
