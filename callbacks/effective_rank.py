"""Per-layer effective rank ``||W||_* / ||W||_F`` during training (thesis figure 6.6)."""
from __future__ import annotations

from typing import Optional

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

from lightning_adv.analysis import effective_ranks, layer_input_sizes

from ._analysis_common import epoch_due, fixed_sample, log_figure, log_scalars, training_dataset

__all__ = ["EffectiveRank", "rank_figure"]


def rank_figure(history: list[tuple[int, dict[str, float]]], title: str = "effective rank"):
    """Effective rank against layer index: the first entry (initialisation) as black dots, the last in colour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    (e0, first), (e1, last) = history[0], history[-1]
    ax.plot(range(len(last)), list(last.values()), "o-", label=f"epoch {e1}")
    ax.plot(range(len(first)), list(first.values()), "k.", label="initialisation" if e0 < 0 else f"epoch {e0}")
    ax.set_xlabel("layer index")
    ax.set_ylabel("effective rank")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return fig


class EffectiveRank(Callback):
    """Effective rank of every conv (FFT over its input size) and linear layer of ``pl_module.model``.

    Computed at the start of training (epoch -1, "initialisation") and every
    ``every_n_epochs`` epochs; logged as ``effective_rank/<layer>`` scalars and as the
    figure ``effective_rank`` (layer index on x, initialisation as black dots).
    ``history`` keeps ``(epoch, {layer: rank})``.
    """

    def __init__(self, every_n_epochs: int = 1) -> None:
        if every_n_epochs < 1:
            raise ValueError(f"EffectiveRank.every_n_epochs must be >= 1, got every_n_epochs={every_n_epochs}")
        self.every_n_epochs = every_n_epochs
        self.history: list[tuple[int, dict[str, float]]] = []
        self._sizes: Optional[dict[str, int]] = None

    def _measure(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", epoch: int) -> None:
        model = pl_module.model
        if self._sizes is None:
            x, _ = fixed_sample(training_dataset(trainer), 1, 0)
            self._sizes = layer_input_sizes(model, x.to(pl_module.device))
        ranks = effective_ranks(model, self._sizes)
        self.history.append((epoch, ranks))
        log_scalars(trainer, {f"effective_rank/{k}": v for k, v in ranks.items()})
        log_figure(trainer, "effective_rank", rank_figure(self.history))

    def on_train_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if not self.history:
            self._measure(trainer, pl_module, -1)

    def on_train_epoch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if epoch_due(trainer, self.every_n_epochs):
            self._measure(trainer, pl_module, trainer.current_epoch)
