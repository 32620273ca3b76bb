"""Tiny random order-book snippets with a planted trend, for unit tests and benchmarks.

Not a market simulator (``simulator.py`` writes real LOBSTER files): each snippet is a random
walk of the mid price in one-cent ticks with a drift of -1, 0 or +1 (the label: down, flat,
up), L levels per side on consecutive ticks, random whole-share sizes, and an execution at the
best price of the side a price move consumes (plus random extra executions).
"""
from __future__ import annotations

import torch
from torch import Tensor

from .book import BookSnippet

__all__ = ["toy_snippets"]


def toy_snippets(n: int, steps: int = 50, levels: int = 5, price: float = 10.0, move_prob: float = 0.3,
                 drift: float = 0.25, exec_prob: float = 0.05, seed: int = 0) -> tuple[BookSnippet, Tensor]:
    """``n`` snippets of ``steps`` snapshots and ``levels`` levels, and their labels (0 down, 1 flat, 2 up).

    Per step the mid moves one tick with probability ``move_prob``, up with probability
    1/2 + drift * (label - 1). A move up executes the best ask, a move down the best bid; other
    steps execute the best price of a random side with probability ``exec_prob``.
    """
    g = torch.Generator().manual_seed(seed)
    label = torch.randint(0, 3, (n,), generator=g)
    moves = torch.rand(n, steps, generator=g) < move_prob
    up_p = 0.5 + drift * (label.double() - 1).view(n, 1)
    up = torch.rand(n, steps, generator=g, dtype=torch.float64) < up_p
    step = torch.where(moves, torch.where(up, 1, -1), 0)
    step[:, 0] = 0
    bid0 = torch.cumsum(step, 1) + int(round(price * 100))          # best bid in cents
    lv = torch.arange(levels).view(1, 1, levels)
    ask_price = (bid0.unsqueeze(-1) + 1 + lv).double() / 100
    bid_price = (bid0.unsqueeze(-1) - lv).double() / 100
    ask_size = torch.randint(1, 11, (n, steps, levels), generator=g).float() * 100
    bid_size = torch.randint(1, 11, (n, steps, levels), generator=g).float() * 100
    extra = (torch.rand(n, steps, generator=g) < exec_prob) & (step == 0)
    extra_side = torch.where(torch.rand(n, steps, generator=g) < 0.5, 1, -1)
    side = torch.where(step != 0, step, torch.where(extra, extra_side, 0))  # +1: ask side executed
    prev_bid = torch.cat([bid0[:, :1], bid0[:, :-1]], 1)
    ex_price = torch.where(side > 0, prev_bid + 1, prev_bid).double() / 100
    e = int((side != 0).sum(1).max()) if n else 0
    exec_step = torch.full((n, e), -1, dtype=torch.int64)
    exec_price = torch.full((n, e), float("nan"), dtype=torch.float64)
    exec_side = torch.zeros((n, e), dtype=torch.int8)
    for b in range(n):
        t = (side[b] != 0).nonzero().squeeze(1)
        exec_step[b, : t.numel()] = t
        exec_price[b, : t.numel()] = ex_price[b, t]
        exec_side[b, : t.numel()] = side[b, t].to(torch.int8)
    return BookSnippet(ask_price, ask_size, bid_price, bid_size, exec_step, exec_price, exec_side), label
