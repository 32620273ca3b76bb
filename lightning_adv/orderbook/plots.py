"""Figures 3.2 and 3.3: clean vs perturbed SWA, and unpropagated vs propagated perturbations.

Every function returns a matplotlib Figure (Agg backend, no display needed); :func:`save_figure`
writes it as PNG and/or hands it to any Lightning logger (``lightning_adv.logging_utils.log_figure``:
TensorBoard, CSV, W&B, MLflow).
"""
from __future__ import annotations

import os
from typing import Any, Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from ..logging_utils import log_figure  # noqa: E402
from .book import BookSnippet, swa  # noqa: E402
from .propagation import ASK, BID, propagate_delta, routing  # noqa: E402

__all__ = ["figure_swa", "figure_perturbation", "save_figure"]


def figure_swa(clean: BookSnippet, perturbed: BookSnippet, index: int = 0, title: str = "") -> Any:
    """Figure 3.2: the SWA series of one snippet, clean and perturbed."""
    fig, ax = plt.subplots(figsize=(8, 3))
    t = torch.arange(clean.steps)
    ax.plot(t, swa(clean[index])[0].cpu(), label="clean", lw=1.5)
    ax.plot(t, swa(perturbed[index])[0].detach().cpu(), label="perturbed", lw=1.0, ls="--")
    ax.set_xlabel("grid step (0.01 s)")
    ax.set_ylabel("SWA ($)")
    ax.set_title(title or "size-weighted average price")
    ax.legend()
    fig.tight_layout()
    return fig


def _side_by_side(added: Tensor) -> Tensor:
    """(T, 2, L) -> (2L, T) image rows: bid levels L-1..0 (deepest at the bottom), then ask levels 0..L-1."""
    bid = added[:, BID].flip(-1)
    return torch.cat([bid, added[:, ASK]], dim=-1).T


def figure_perturbation(snippet: BookSnippet, delta: Tensor, index: int = 0, title: str = "") -> Any:
    """Figure 3.3 (bottom): attack shares as placed (unpropagated) and as they sit in the snapshots (propagated)."""
    d = delta[index:index + 1].detach().float()
    prop = propagate_delta(routing(snippet[index]), d)[0].cpu()
    placed = torch.where(torch.isfinite(torch.stack([snippet.ask_price, snippet.bid_price], 2)[index]),
                         d[0], torch.zeros(())).cpu()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5), sharey=True)
    lv = snippet.levels
    for ax, img, name in zip(axes, (_side_by_side(placed), _side_by_side(prop)), ("unpropagated", "propagated")):
        im = ax.imshow(img.numpy(), aspect="auto", origin="lower", cmap="viridis", interpolation="nearest")
        ax.axhline(lv - 0.5, color="w", lw=0.8)
        ax.set_title(f"{name} perturbation")
        ax.set_xlabel("grid step")
        fig.colorbar(im, ax=ax, label="shares")
    axes[0].set_yticks([0, lv - 1, lv, 2 * lv - 1], [f"bid {lv - 1}", "bid 0", "ask 0", f"ask {lv - 1}"])
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def save_figure(fig: Any, path: Optional[str] = None, logger: Any = None, tag: str = "orderbook",
                step: int = 0) -> None:
    """Write ``fig`` to ``path`` (PNG) and/or to ``logger`` (a Lightning logger, a list of them or a Trainer:
    :func:`lightning_adv.logging_utils.log_figure`); then close it."""
    if path:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        fig.savefig(path, dpi=120)
    if logger is not None:
        log_figure(logger, tag, fig, step=step, close=False)
    plt.close(fig)
