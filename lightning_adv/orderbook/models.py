"""The thesis' three valuation models (section 3.3.2): linear, MLP, LSTM on the SWA series.

Every model takes a :class:`~.book.BookSnippet` (or an already computed (B, T) SWA series)
and returns 3 logits (down, flat, up). Its first layer, :class:`SWAFeatures`, computes the
size-weighted average price of every snapshot and normalises the series, so an attack on
the order-book sizes differentiates through the whole input pipeline.

Normalisation: ``(swa_t / swa_{T-1} - 1) * scale`` with ``scale = 1e4`` (basis points
relative to the last value). Why: the label is the change of the SWA after the end of the
snippet relative to its last value, so anchoring at the last value puts the label's
reference at 0; relative (not dollar) changes make one model usable across price levels
(Ford at $9, Nvidia at $180); basis points bring one-tick moves (1 cent = 11 bp on $9, 0.5 bp
on $180) to order one, where the networks' default initialisation works.
"""
from __future__ import annotations

from typing import Any, Union

import torch
from torch import Tensor, nn

from .book import BookSnippet, swa
from ..validation import check_int, check_real

__all__ = ["SWAFeatures", "LinearValuation", "MLPValuation", "LSTMValuation", "VALUATION_MODELS",
           "create_valuation_model"]


class SWAFeatures(nn.Module):
    """BookSnippet (or a (B, T) float64 SWA series) -> (B, T) float32 relative changes in units of 1/scale."""

    def __init__(self, scale: float = 1e4) -> None:
        super().__init__()
        self.scale = check_real("scale", scale, positive=True, hint="1e4 = basis points")

    def forward(self, x: Union[BookSnippet, Tensor]) -> Tensor:
        s = swa(x) if isinstance(x, BookSnippet) else x.to(torch.float64)
        return ((s / s[:, -1:] - 1.0) * self.scale).to(torch.float32)


def _check_steps(steps: int) -> int:
    return check_int("steps", steps, 2, "the snippet's T, 6000 in the thesis", whole_floats=True)


class _Valuation(nn.Module):
    num_classes = 3

    def _check(self, f: Tensor) -> None:
        if f.shape[1] != self.steps:
            raise ValueError(f"{type(self).__name__} was built for steps={self.steps} but the snippet has "
                             f"T={f.shape[1]}; set the model's steps to the datamodule's")


class LinearValuation(_Valuation):
    """A linear classifier on the T normalised SWA values."""

    def __init__(self, steps: int = 6000, scale: float = 1e4) -> None:
        super().__init__()
        self.steps = _check_steps(steps)
        self.features = SWAFeatures(scale)
        self.head = nn.Linear(self.steps, 3)

    def forward(self, x: Union[BookSnippet, Tensor]) -> Tensor:
        f = self.features(x)
        self._check(f)
        return self.head(f)


class MLPValuation(_Valuation):
    """``depth`` hidden ReLU layers of ``width`` units (thesis: 4 x 8000) on the T normalised SWA values."""

    def __init__(self, steps: int = 6000, scale: float = 1e4, width: int = 8000, depth: int = 4) -> None:
        super().__init__()
        self.steps = _check_steps(steps)
        if width < 1 or depth < 1:
            raise ValueError(f"MLPValuation needs width >= 1 and depth >= 1, got width={width}, depth={depth}")
        self.features = SWAFeatures(scale)
        layers: list[nn.Module] = []
        d = self.steps
        for _ in range(depth):
            layers += [nn.Linear(d, width), nn.ReLU()]
            d = width
        layers.append(nn.Linear(d, 3))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Union[BookSnippet, Tensor]) -> Tensor:
        f = self.features(x)
        self._check(f)
        return self.net(f)


class LSTMValuation(_Valuation):
    """An LSTM (thesis: 3 layers, hidden 100) reading the normalised SWA series one value per step;
    a linear layer maps the last hidden state to the logits. Works for any T (``steps`` is only checked)."""

    def __init__(self, steps: int = 6000, scale: float = 1e4, hidden: int = 100, layers: int = 3) -> None:
        super().__init__()
        self.steps = _check_steps(steps)
        if hidden < 1 or layers < 1:
            raise ValueError(f"LSTMValuation needs hidden >= 1 and layers >= 1, got hidden={hidden}, layers={layers}")
        self.features = SWAFeatures(scale)
        self.lstm = nn.LSTM(1, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, 3)

    def forward(self, x: Union[BookSnippet, Tensor]) -> Tensor:
        f = self.features(x)
        self._check(f)
        out, _ = self.lstm(f.unsqueeze(-1))
        return self.head(out[:, -1])


VALUATION_MODELS: dict[str, type[_Valuation]] = {"linear": LinearValuation, "mlp": MLPValuation,
                                                  "lstm": LSTMValuation}


def create_valuation_model(name: str, steps: int, scale: float = 1e4, **kwargs: Any) -> nn.Module:
    """Build ``linear``, ``mlp`` (kwargs ``width``, ``depth``) or ``lstm`` (``hidden``, ``layers``)."""
    if name not in VALUATION_MODELS:
        raise ValueError(f"arch={name!r} is not a valuation model; choose one of {sorted(VALUATION_MODELS)}")
    cls = VALUATION_MODELS[name]
    allowed = set(cls.__init__.__code__.co_varnames[1:cls.__init__.__code__.co_argcount]) - {"steps", "scale"}
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise ValueError(f"arch_kwargs {unknown} are not arguments of {name!r}; it takes {sorted(allowed)}")
    return cls(steps=steps, scale=scale, **kwargs)
