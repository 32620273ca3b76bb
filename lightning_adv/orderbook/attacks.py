"""Order-book attacks of section 3.4 as :class:`lightning_adv.attacks.Attack` subclasses.

Inputs ``x`` are :class:`~.book.BookSnippet` batches (the class duck-types ``shape``, ``device``,
indexing and ``detach``, so :class:`~lightning_adv.attacks.AttackSuite` runs these attacks
unchanged). An attack chooses placements ``delta[b, i, side, level]`` (whole shares added at
step i at the price of that level, among the ``levels`` best of its side), propagates them
through the book (:mod:`.propagation`) and returns the perturbed snippet; ``extras`` carry the
per-example capital, cost, relative size and shares (:mod:`.measures`), the suite's "norm"
column is the relative size in percent.

* :class:`RandomOrders` - the random baseline of section 3.4.3 (orders at random steps, sides and
  levels until the capital budget, $2,000,000 in the thesis, is spent);
* :class:`CapitalBoundedAttack` - the gradient attack of section 3.4.4: ascent on the
  cross-entropy with a random learning rate alpha ~ U(0, alpha0), stopped per example when the
  rounded perturbation R_r(a) = floor(a + r) fools the model or its capital would exceed c.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..attacks.base import Attack, AttackOutput, Model
from .book import BookSnippet
from .measures import capital as capital_of
from .measures import measures
from .propagation import Routing, placement_prices, propagate, routing
from ..validation import check_int, check_real

__all__ = ["OrderBookAttack", "RandomOrders", "CapitalBoundedAttack", "round_shares"]


def round_shares(a: Tensor, r: float) -> Tensor:
    """R_r(a) = floor(a + r): the greatest integer <= a + r (thesis: R_0.3(0.8) = 1), never below 0."""
    return torch.floor(a + r).clamp_min(0.0)


class OrderBookAttack(Attack):
    """Common checks of the order-book attacks.

    Args:
        levels: orders go only to the ``levels`` best prices of each side at placement time
            (thesis: the 10 best); at most the snippets' L.
        name: label in reports and metric keys.
    """

    domain = "orderbook"

    def __init__(self, levels: int = 10, name: Optional[str] = None) -> None:
        super().__init__(norm="linf", eps=None, name=name, bn_mode="eval")
        self.norm = "relsize%"  # the suite's norm column: relative size of the perturbation in percent
        self.levels = check_int("levels", levels, 1, "thesis: 10", whole_floats=True)

    def check_inputs(self, x: Any) -> None:
        if not isinstance(x, BookSnippet):
            raise ValueError(f"{self.label}: order-book attacks take a BookSnippet, got {type(x).__name__}; "
                             "use a LOBSTERDataModule (batches of (BookSnippet, label))")
        if self.levels > x.levels:
            raise ValueError(f"{self.label}: levels={self.levels} but the snippets have only L={x.levels} levels "
                             f"per side; set levels <= {x.levels}")

    def placement_mask(self, x: BookSnippet) -> Tensor:
        """(B, T, 2, L) bool: where an order may be placed (a price exists, among the ``levels`` best)."""
        ok = torch.isfinite(placement_prices(x))
        ok[..., self.levels:] = False
        return ok

    def finalize(self, x: Any, x_adv: Any) -> Any:
        """Check the order-book constraints: prices untouched, sizes only raised by whole shares, and
        only where a price exists. A violation is a bug of the attack, so it raises."""
        for side in ("ask", "bid"):
            p, pa = getattr(x, f"{side}_price"), getattr(x_adv, f"{side}_price")
            if not torch.equal(torch.nan_to_num(p, nan=-1.0), torch.nan_to_num(pa, nan=-1.0)):
                raise RuntimeError(f"{self.label} changed {side} prices; order-book attacks may only add shares")
            added = getattr(x_adv, f"{side}_size").double() - getattr(x, f"{side}_size").double()
            if bool((added < 0).any()) or not torch.equal(added, torch.round(added)):
                raise RuntimeError(f"{self.label} lowered {side} sizes or added fractional shares")
            if bool((added[~torch.isfinite(p)] != 0).any()):
                raise RuntimeError(f"{self.label} added {side} shares at an empty level (no price)")
        return x_adv

    def perturbation_size(self, x: Any, x_adv: Any) -> Tensor:
        """Relative size in percent: attack shares in all snapshots over the clean book's shares."""
        added = (x_adv.ask_size.double() - x.ask_size.double()).flatten(1).sum(1) + \
                (x_adv.bid_size.double() - x.bid_size.double()).flatten(1).sum(1)
        book = x.ask_size.double().flatten(1).sum(1) + x.bid_size.double().flatten(1).sum(1)
        return 100.0 * added / book

    def _output(self, x: BookSnippet, delta: Tensor, route: Routing) -> AttackOutput:
        extras = {k: v.detach() for k, v in measures(x, delta, route).items()}
        # checker: an order-book attack's output is a BookSnippet (AttackOutput is typed on tensors)
        return AttackOutput(x_adv=propagate(x, delta.detach(), route).detach(), extras=extras)  # type: ignore[arg-type]


class RandomOrders(OrderBookAttack):
    """Random orders of ``order_size`` shares at uniformly random (step, side, level) positions among the
    ``levels`` best prices, drawn until the next order would exceed ``capital`` dollars (section 3.4.3)."""

    kind = "random"

    def __init__(self, capital: float = 2_000_000.0, order_size: int = 100, levels: int = 10,
                 name: Optional[str] = None) -> None:
        super().__init__(levels=levels, name=name)
        self.capital = check_real("capital", capital, positive=True, hint="dollars; thesis: over 2,000,000")
        self.order_size = check_int("order_size", order_size, 1, "a whole number of shares", whole_floats=True)

    def default_label(self) -> str:
        return f"random_c{self.capital:g}"

    def _perturb(self, model: Model, x: Any, y: Tensor, targets: Optional[Tensor]) -> AttackOutput:
        x = x.detach()
        mask = self.placement_mask(x)
        prices = torch.nan_to_num(placement_prices(x), nan=0.0)
        delta = torch.zeros(mask.shape, dtype=torch.float32, device=x.device)
        for b in range(x.batch_size):
            w = mask[b].flatten().float()
            if w.sum() == 0:
                continue
            cheapest = float(prices[b][mask[b]].min()) * self.order_size
            n = min(int(self.capital // cheapest) + 1, 10_000_000)
            idx = torch.multinomial(w, n, replacement=True)
            spent = torch.cumsum(prices[b].flatten()[idx] * self.order_size, 0)
            idx = idx[spent <= self.capital]
            delta[b].view(-1).index_add_(0, idx, torch.full(idx.shape, float(self.order_size), device=x.device))
        return self._output(x, delta, routing(x))


class CapitalBoundedAttack(OrderBookAttack):
    """The capital-constrained gradient attack of section 3.4.4 (untargeted).

    Gradient ascent on the cross-entropy in the placements ``a`` with a random learning rate
    alpha ~ U(0, alpha0) drawn per example; after every step the iterate is rounded to whole
    shares with R_r(a) = floor(a + r). An example stops when the model misclassifies the rounded
    perturbation (it is returned) or when the rounded perturbation's capital would exceed
    ``capital`` (the last rounded iterate within the bound is returned, so the bound holds after
    rounding; the thesis stops there too but does not say which iterate it returns).

    Args:
        capital: the bound c on the capital required, dollars (thesis: 100,000).
        r: rounding offset in [0, 1) (thesis: 0.95, i.e. nearly a ceiling).
        alpha0: largest learning rate. With ``normalize`` (default) the gradient is divided by its
            largest entry per example, so alpha0 is the most shares one step adds at one place,
            independent of the asset's price and book depth; ``normalize=false`` is the thesis'
            raw update a += alpha * grad (then alpha0 must match the gradient's scale).
        steps: most ascent steps.
        levels: orders only at the ``levels`` best prices of each side.
    """

    def __init__(self, capital: float = 100_000.0, r: float = 0.95, alpha0: float = 1.0, steps: int = 200,
                 levels: int = 10, normalize: bool = True, name: Optional[str] = None) -> None:
        super().__init__(levels=levels, name=name)
        self.capital = check_real("capital", capital, positive=True, hint="dollars; thesis: 100000")
        self.r = check_real("r", r, minimum=0.0, maximum=1.0, below_max=True, hint="R_r(a) = floor(a + r); thesis: 0.95")
        self.alpha0 = check_real("alpha0", alpha0, positive=True, hint="alpha ~ U(0, alpha0)")
        self.steps = check_int("steps", steps, 1, whole_floats=True)
        self.normalize = bool(normalize)

    def default_label(self) -> str:
        return f"grad{self.steps}_c{self.capital:g}"

    def _grad(self, model: Model, x: BookSnippet, a: Tensor, y: Tensor, route: Routing) -> Tensor:
        a = a.detach().requires_grad_(True)
        with torch.backends.cudnn.flags(enabled=False):  # cuDNN's LSTM backward refuses eval mode
            # checker: order-book models take the BookSnippet itself (the attack base's Model is typed on tensors)
            loss = F.cross_entropy(model(propagate(x, a, route)), y, reduction="sum")  # type: ignore[arg-type]
        (g,) = torch.autograd.grad(loss, a)
        return g

    def _perturb(self, model: Model, x: Any, y: Tensor, targets: Optional[Tensor]) -> AttackOutput:
        x = x.detach()
        route = routing(x)
        mask = self.placement_mask(x).float()
        a = torch.zeros(mask.shape, dtype=torch.float32, device=x.device)
        best = torch.zeros_like(a)
        active = torch.ones(x.batch_size, dtype=torch.bool, device=x.device)
        alpha = torch.rand(x.batch_size, device=x.device) * self.alpha0
        view = (-1, 1, 1, 1)
        for k in range(self.steps + 1):
            rounded = round_shares(a, self.r) * mask
            over = capital_of(x, rounded) > self.capital
            with torch.no_grad():
                # checker: as above
                fooled = model(propagate(x, rounded, route)).argmax(1) != y  # type: ignore[arg-type]
            keep = active & ~over
            best = torch.where(keep.view(view), rounded, best)
            active = keep & ~fooled
            if k == self.steps or not bool(active.any()):
                break
            g = self._grad(model, x, a, y, route) * mask
            if self.normalize:
                g = g / g.abs().flatten(1).amax(1).clamp_min(1e-30).view(view)
            a = (a + (alpha * active).view(view) * g).clamp_min(0.0)
        if bool((capital_of(x, best) > self.capital * (1 + 1e-12)).any()):
            raise RuntimeError(f"{self.label}: a returned perturbation exceeds the capital bound (a bug)")
        return self._output(x, best, route)
