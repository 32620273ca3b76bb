"""The three sizes of an order-book perturbation (section 3.4.2), per example.

* **capital required** C: the dollar value of all attack orders, sum of shares x price at placement;
* **cost**: the loss of the attacker's assets (cash + stock) over the snippet. Executed attack
  orders trade at their price P (a sell order executed at P: +P cash, -1 share; a buy: -P, +1);
  the stock position left at the end is valued at the **mid price of the last snapshot**
  ((best ask + best bid) / 2; the SWA of the last snapshot where a side is empty). Unexecuted
  orders cost nothing (they are cancelled at the end); no transaction fees. Positive = the
  attacker lost money;
* **relative size**: the attack shares of the propagated perturbation, summed over all
  snapshots and levels, as a percentage of the total size on the clean book during the snippet.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .book import BookSnippet, swa
from .propagation import ASK, BID, Routing, placement_prices, propagate_delta, routing

__all__ = ["capital", "cost", "relative_size", "end_price", "measures"]


def capital(snippet: BookSnippet, delta: Tensor) -> Tensor:
    """(B,) float64 dollars: sum over placements of shares x price at placement (empty levels ignored)."""
    prices = placement_prices(snippet)
    ok = torch.isfinite(prices)
    return torch.where(ok, delta.to(torch.float64) * torch.nan_to_num(prices, nan=0.0),
                       torch.zeros((), dtype=torch.float64, device=delta.device)).flatten(1).sum(1)


def end_price(snippet: BookSnippet) -> Tensor:
    """(B,) float64: mid price of the last snapshot (its SWA where a side is empty)."""
    mid = (snippet.ask_price[:, -1, 0] + snippet.bid_price[:, -1, 0]) / 2
    return torch.where(torch.isfinite(mid), mid, swa(snippet)[:, -1])


def cost(snippet: BookSnippet, delta: Tensor, route: Routing | None = None) -> Tensor:
    """(B,) float64 dollars lost by the attacker (see the module doc); executions come from the routing."""
    route = routing(snippet) if route is None else route
    prices = torch.nan_to_num(placement_prices(snippet), nan=0.0)
    executed = (route.exec_at < snippet.steps) & route.valid
    n = torch.where(executed, delta.to(torch.float64), torch.zeros((), dtype=torch.float64, device=delta.device))
    mid = end_price(snippet).view(-1, 1, 1)
    # sold at P (ask side): lost mid - P per share; bought at P (bid side): lost P - mid per share
    loss_ask = (n[:, :, ASK] * (mid - prices[:, :, ASK])).flatten(1).sum(1)
    loss_bid = (n[:, :, BID] * (prices[:, :, BID] - mid)).flatten(1).sum(1)
    return loss_ask + loss_bid


def relative_size(snippet: BookSnippet, delta: Tensor, route: Routing | None = None,
                  propagated: Tensor | None = None) -> Tensor:
    """(B,) percent: propagated attack shares over the clean book's shares in all snapshots (differentiable)."""
    if propagated is None:
        route = routing(snippet) if route is None else route
        propagated = propagate_delta(route, delta)
    book = (snippet.ask_size.to(torch.float64).flatten(1).sum(1) + snippet.bid_size.to(torch.float64).flatten(1).sum(1))
    return 100.0 * propagated.to(torch.float64).flatten(1).sum(1) / book


def measures(snippet: BookSnippet, delta: Tensor, route: Routing | None = None) -> dict[str, Tensor]:
    """All three, plus the number of attack shares placed, as (B,) float64 tensors (``AttackOutput.extras``)."""
    route = routing(snippet) if route is None else route
    d = torch.where(route.valid, delta, torch.zeros_like(delta))
    return {"capital": capital(snippet, d), "cost": cost(snippet, d, route),
            "relative_size": relative_size(snippet, d, route), "shares": d.to(torch.float64).flatten(1).sum(1)}
