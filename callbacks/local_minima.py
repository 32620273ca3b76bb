"""Initialisations of thesis section 6.2 (tables 6.1-6.4) as a callback: Lemma 6.1, bias, zero."""
from __future__ import annotations

from typing import Optional

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback

from lightning_adv.analysis import (
    INIT_KINDS,
    first_linear_inputs,
    fit_linear_classifier,
    he_uniform_init_,
    init_biases_,
    lemma61_init_,
    linear_layers,
    zero_init_,
)
from lightning_adv.models import create_model, load_model_weights

from ._analysis_common import fixed_sample, log_scalars, training_dataset

__all__ = ["LocalMinimumInit"]


class LocalMinimumInit(Callback):
    """Re-initialise ``pl_module.model`` before training (not when resuming from a checkpoint).

    Kinds:

    * ``default``: leave the model's own initialisation (the baseline row);
    * ``lemma61``: embed a linear classifier into the MLP by Lemma 6.1 on the training
      set (every activation positive): the linear classifier is read from
      ``linear_weights`` (weights of an ``mlp`` with ``hidden: []`` trained on the same
      data, e.g. by ``configs/ch6_linear_*.yaml``) or, when None, fitted here by full-batch
      L-BFGS with ``linear_weight_decay`` (rank-constrained to the MLP's smallest width
      ``s`` when ``s`` is below the number of classes: the rank-``s`` problem of
      Theorem 6.2);
    * ``bias_constant`` (``value``, e.g. 20) and ``bias_uniform`` (``U(-value, value)``):
      every bias of Linear / Conv / BatchNorm layers;
    * ``zero``: every parameter 0;
    * ``he_uniform``: uniform He initialisation of every conv / linear weight, zero
      biases (the NTK experiments of section 6.4).

    Runs in ``setup`` (on CPU, before DDP broadcasts rank 0's weights and before a
    checkpoint given by ``ckpt_path`` is restored over it). Logs ``init/linear_loss`` for
    ``lemma61``.

    Args:
        kind: one of ``default``, ``lemma61``, ``bias_constant``, ``bias_uniform``, ``zero``,
            ``he_uniform``.
        value: the bias constant / half-width.
        linear_weights: path of the linear classifier (``lemma61``).
        linear_weight_decay: L2 coefficient when fitting the linear classifier here.
        linear_max_iter: L-BFGS iterations of that fit.
        num_samples: training examples the construction must cover (None: all).
        balance: rescale the constructed layers to equal norms (same function, positive
            activations, a much less sharp point; see ``analysis.balance_layers``).
        seed: seed of the uniform draw and of the subset.
    """

    def __init__(self, kind: str = "default", value: float = 20.0, linear_weights: Optional[str] = None,
                 linear_weight_decay: float = 0.0, linear_max_iter: int = 500, num_samples: Optional[int] = None,
                 balance: bool = False, seed: int = 0) -> None:
        if kind not in INIT_KINDS:
            raise ValueError(f"LocalMinimumInit.kind={kind!r} is not one of {INIT_KINDS}")
        if kind == "bias_uniform" and value <= 0:
            raise ValueError(f"LocalMinimumInit.value must be > 0 for bias_uniform (U(-value, value)), got value={value}")
        if linear_weight_decay < 0:
            raise ValueError(f"LocalMinimumInit.linear_weight_decay must be >= 0, got {linear_weight_decay}")
        self.kind, self.value, self.linear_weights = kind, float(value), linear_weights
        if linear_max_iter < 1:
            raise ValueError(f"LocalMinimumInit.linear_max_iter must be >= 1, got {linear_max_iter}")
        self.linear_weight_decay, self.linear_max_iter = float(linear_weight_decay), int(linear_max_iter)
        self.num_samples, self.seed, self.balance = num_samples, seed, balance
        self.linear_loss: Optional[float] = None
        self.margin: Optional[float] = None

    def setup(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str) -> None:
        if stage != "fit" or self.kind == "default" or trainer.ckpt_path:
            return
        model = pl_module.model
        if self.kind == "zero":
            zero_init_(model)
        elif self.kind == "he_uniform":
            he_uniform_init_(model)
        elif self.kind in ("bias_constant", "bias_uniform"):
            gen = torch.Generator().manual_seed(self.seed)
            init_biases_(model, "constant" if self.kind == "bias_constant" else "uniform", self.value, gen)
        else:
            self._lemma61(trainer, pl_module)

    def _lemma61(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        model = pl_module.model
        x, y = fixed_sample(training_dataset(trainer), self.num_samples, self.seed)
        x = x.to(next(model.parameters()).device)
        y = y.to(x.device)
        z = first_linear_inputs(model, x)
        layers = linear_layers(model)
        if self.linear_weights:
            linear = create_model("mlp", input_size=x.shape[-1], num_classes=layers[-1].out_features,
                                  in_channels=x.shape[1], hidden=[])
            load_model_weights(linear, self.linear_weights)
            lin = linear_layers(linear)[0]
        else:
            # Theorem 6.2: the rank-s linear problem, s the smallest width of the MLP
            s = min(lin_.out_features for lin_ in layers)
            lin = fit_linear_classifier(z, y, layers[-1].out_features, self.linear_weight_decay,
                                        max_iter=self.linear_max_iter, rank=s, seed=self.seed)
        with torch.no_grad():
            self.linear_loss = float(F.cross_entropy(lin(z), y))
        self.margin = lemma61_init_(model, lin.weight, lin.bias, x, balance=self.balance)
        log_scalars(trainer, {"init/linear_loss": self.linear_loss, "init/lemma61_margin": self.margin}, step=0)
