"""Universal targeted transfer perturbations (section 3.5, table 3.3).

One perturbation ``u[t, side, level]`` in *level-relative* coordinates: shares placed at
grid step t on ``side`` at the price ``level`` ticks-of-book away from the best offer (the
attacker does not know future dollar prices, only "the 3rd best ask"). On a snippet it
becomes the placements ``delta[b] = u`` (dropped where the level is empty) and goes through
the propagation, so orders placed early still execute when the market trades at their price.

It is trained on training snippets by stochastic gradient descent (Adam here) on

    CE(f(SWA(x + p(u))), y_target) + gamma * R(u),  R = relative size in percent,

with ``u >= 0`` after every step and rounded to whole shares at the end (round half up). The
*fool rate* is measured on the test snippets the victim classifies correctly and whose label is
not the target: the fraction the perturbation moves into the target class.
"""
from __future__ import annotations

from typing import Iterable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..attacks.base import frozen_parameters
from ..attacks.context import module_mode
from .book import BookSnippet
from .measures import relative_size
from .propagation import placement_prices, propagate, propagate_delta, routing
from ..validation import check_int, check_real

__all__ = ["placements_from_universal", "train_universal", "fool_rate", "transfer_table"]


def placements_from_universal(snippet: BookSnippet, u: Tensor) -> Tensor:
    """(B, T, 2, L) placements of the level-relative perturbation ``u`` (T, 2, L_u), L_u <= L; empty levels dropped."""
    b, t, lv = snippet.batch_size, snippet.steps, snippet.levels
    if u.dim() != 3 or u.shape[0] != t or u.shape[1] != 2 or u.shape[2] > lv:
        raise ValueError(f"universal perturbation must have shape (T={t}, 2, levels<={lv}), got {tuple(u.shape)}")
    full = u.new_zeros(t, 2, lv)
    full = torch.cat([u, full[..., u.shape[2]:]], dim=-1)
    valid = torch.isfinite(placement_prices(snippet))
    return torch.where(valid, full.unsqueeze(0).expand(b, -1, -1, -1), torch.zeros((), dtype=u.dtype, device=u.device))


def train_universal(model: nn.Module, batches: Iterable[tuple[BookSnippet, Tensor]], target: int, steps: int,
                    levels: int = 10, lr: float = 5.0, gamma: float = 0.0, seed: Optional[int] = 0) -> Tensor:
    """Train a universal perturbation (T, 2, levels) in whole shares on ``steps`` batches drawn cyclically
    from ``batches`` (the model is frozen and in eval mode). ``lr``: Adam's step in shares."""
    if target not in (0, 1, 2):
        raise ValueError(f"target must be a class 0 (down), 1 (flat) or 2 (up), got target={target}")
    check_int("steps", steps, 1, whole_floats=True)
    check_real("gamma", gamma, minimum=0.0, hint="the relative size penalty")
    check_real("lr", lr, positive=True, hint="Adam's step in shares")
    data = list(batches)
    if not data:
        raise ValueError("train_universal got no training batches")
    first = data[0][0]
    if levels > first.levels:
        raise ValueError(f"levels={levels} but the snippets have only L={first.levels}; set levels <= {first.levels}")
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    u = (torch.rand(first.steps, 2, levels, generator=gen) * 0.5).to(first.device).requires_grad_(True)
    opt = torch.optim.Adam([u], lr=lr)
    with frozen_parameters(model), module_mode(model, "eval"), torch.enable_grad(), \
            torch.backends.cudnn.flags(enabled=False):
        for k in range(int(steps)):
            x, _ = data[k % len(data)]
            x = x.to(first.device).detach()
            route = routing(x)
            delta = placements_from_universal(x, u)
            prop = propagate_delta(route, delta)
            logits = model(propagate(x, delta, route))
            tgt = torch.full((x.batch_size,), target, dtype=torch.long, device=x.device)
            loss = F.cross_entropy(logits, tgt) + gamma * relative_size(x, delta, propagated=prop).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                u.clamp_(min=0.0)
    return torch.floor(u.detach() + 0.5)


@torch.no_grad()
def fool_rate(model: nn.Module, batches: Iterable[tuple[BookSnippet, Tensor]], u: Tensor,
              target: int) -> dict[str, float]:
    """Fool rate of ``u`` into ``target`` on the correctly classified test snippets outside the target class,
    and the mean relative size (percent) of ``u`` on them."""
    fooled = n = 0
    sizes: list[Tensor] = []
    with module_mode(model, "eval"):
        for x, y in batches:
            x, y = x.to(u.device), y.to(u.device)
            eligible = (model(x).argmax(1) == y) & (y != target)
            if not bool(eligible.any()):
                continue
            xe = x[eligible.nonzero().squeeze(1)]
            delta = placements_from_universal(xe, u)
            fooled += int((model(propagate(xe, delta)).argmax(1) == target).sum())
            n += xe.batch_size
            sizes.append(relative_size(xe, delta))
    size = float(torch.cat(sizes).mean()) if sizes else float("nan")
    return {"fool_rate": fooled / n if n else float("nan"), "fooled": float(fooled), "n": float(n),
            "relative_size": size}


def transfer_table(surrogates: dict[str, nn.Module], victims: dict[str, nn.Module],
                   train_batches: list[tuple[BookSnippet, Tensor]], test_batches: list[tuple[BookSnippet, Tensor]],
                   target: int, steps: int, levels: int = 10, lr: float = 5.0, gamma: float = 0.0) -> str:
    """Table 3.3: a universal perturbation trained on each surrogate, fool rate and relative size on each victim."""
    cols = {}
    for s_name, s_model in surrogates.items():
        u = train_universal(s_model, train_batches, target, steps, levels=levels, lr=lr, gamma=gamma)
        cols[s_name] = {v_name: fool_rate(v, test_batches, u, target) for v_name, v in victims.items()}
    head = "| model | " + " | ".join(f"U_{s} fooled | U_{s} size" for s in cols) + " |"
    lines = [f"Universal transfer attacks into class {target} (gamma={gamma:g})", head,
             "|" + "---|" * (1 + 2 * len(cols))]
    for v_name in victims:
        cells = [f"{cols[s][v_name]['fool_rate']:.2%} | {cols[s][v_name]['relative_size']:.2f}%" for s in cols]
        lines.append(f"| {v_name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
