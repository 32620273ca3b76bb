"""Fit the order-flow simulator to LOBSTER days, and presets for the thesis' kinds of stock.

:func:`day_statistics` measures what changes attack results on a day (message + order-book arrays):
the spread (time-weighted, in ticks), the depth at the best levels, the gap between visible
levels, the order-size and lot mix, the message-type mix (hidden executions, partial cancels),
the message rate, and where hidden executions happen (at a visible price of their side, where an
attack order could rest, or inside the spread).

:func:`calibrate` estimates :class:`~.simulator.SimulatorConfig` from days, each parameter by the
moment of the simulator's own rule that produces it (exact on a simulated day up to sampling
noise): ``limit_rate`` = submissions per second; market orders = runs of visible executions
with one time stamp and side, plus hidden executions (``market_rate``, ``hidden_exec_prob``);
``cancel_rate`` = cancellations per second per live order (orders followed through their ids in a
complete history, else the visible book's shares over the mean order size);
``partial_cancel_prob`` = type 2 / (type 2 + type 3); ``depth_decay`` = 1 / (1 + mean ticks behind
the own best quote) of submissions; ``improve_prob`` / ``improve_max_ticks`` = how often and how far
submissions go inside a spread wider than a tick (the largest step seen: the maximum-likelihood
estimate); ``round_lot_prob`` / ``lot_scale`` from the
submitted sizes; ``hidden_inside_prob`` from the hidden executions' prices; ``initial_price`` = the
first mid. The latent-signal parameters cannot be seen in a book and are kept from ``base``.

Limits (see docs/orderbook.md): an L-level file holds only messages that touch its L levels, so
its rates are rates of the visible part of the book; the simulator's odd lots are uniform 1-99.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional, Sequence, Union

import numpy as np

from .lobster import LobsterDay, Messages, OrderBook, read_messages, read_orderbook
from .simulator import TICK, SimulatorConfig, simulate_day

__all__ = ["DayStatistics", "day_statistics", "calibrate", "lobster_view", "PRESETS", "preset"]

Day = Union[LobsterDay, tuple[Messages, OrderBook]]


@dataclass
class DayStatistics:
    """Statistics of one day (book statistics weighted by the time each row holds)."""

    seconds: float
    messages_per_second: float
    type_shares: dict[int, float]          # share of all messages, types 1-5
    partial_cancel_share: float            # type 2 / (type 2 + type 3)
    hidden_at_visible_share: float         # type 5 at a visible price of the executed side (an attack order's place)
    hidden_inside_share: float             # type 5 strictly inside the spread
    spread_ticks_mean: float
    spread_one_tick_share: float
    spread_ticks_p90: float
    depth_best: float                      # mean size at the best ask and bid
    depth_level_mean: float                # mean size of a non-empty visible level (NaN for L = 1)
    level_gap_ticks: float                 # mean ticks between adjacent non-empty levels (NaN for L = 1)
    submission_size_mean: float
    round_lot_share: float                 # submissions of a multiple of 100 shares
    mid_price: float                       # dollars


def _load(day: Day) -> tuple[Messages, OrderBook]:
    if isinstance(day, LobsterDay):
        return read_messages(day.message_path), read_orderbook(day.orderbook_path)
    return day


def lobster_view(messages: Messages, book: OrderBook, levels: int) -> tuple[Messages, OrderBook]:
    """The messages an ``levels``-level LOBSTER file would hold (those that change the first ``levels``
    levels, hidden executions and halts) with their rows, to compare a simulated day with a real file."""
    cut = OrderBook(book.ask_price[:, :levels], book.ask_size[:, :levels], book.bid_price[:, :levels],
                    book.bid_size[:, :levels])
    rows = np.concatenate([cut.ask_price, cut.ask_size, cut.bid_price, cut.bid_size], axis=1)
    changed = np.ones(len(rows), bool)
    changed[1:] = (rows[1:] != rows[:-1]).any(1)
    keep = changed | np.isin(messages.type, (5, 7))
    return messages[keep], cut[keep]


def _prior(a: np.ndarray) -> np.ndarray:
    """Row k - 1 of an (N, L) book array for each message k (zeros, an empty book, before the first)."""
    return np.concatenate([np.zeros_like(a[:1]), a[:-1]])


def _before(book: OrderBook) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Best ask/bid price and size before each message."""
    # checker: the four arrays of the generator, in order
    return tuple(_prior(a)[:, 0] for a in (book.ask_price, book.ask_size, book.bid_price, book.bid_size))  # type: ignore[return-value]


def day_statistics(messages: Messages, book: OrderBook) -> DayStatistics:
    """See :class:`DayStatistics`; prices in ticks of $0.01."""
    t = messages.time_ns.astype(np.float64) / 1e9
    seconds = float(t[-1] - t[0]) if len(t) > 1 else 0.0
    w = np.diff(np.append(t, t[-1]))
    both = (book.ask_size[:, 0] > 0) & (book.bid_size[:, 0] > 0)
    ww = np.where(both, w, 0.0)
    ww = ww / ww.sum() if ww.sum() > 0 else np.where(both, 1.0, 0.0) / max(both.sum(), 1)
    spread = (book.ask_price[:, 0] - book.bid_price[:, 0]) / TICK
    order = np.argsort(spread)
    p90 = float(spread[order][np.searchsorted(np.cumsum(ww[order]), 0.9)]) if both.any() else float("nan")
    mid = (book.ask_price[:, 0] + book.bid_price[:, 0]) / 2 / 10_000
    n = {k: int((messages.type == k).sum()) for k in range(1, 8)}
    ask_p, _, bid_p, _ = _before(book)
    h = messages.type == 5
    at_visible = np.zeros(len(messages), bool)
    for side_price, side_size, direction in ((book.ask_price, book.ask_size, -1), (book.bid_price, book.bid_size, 1)):
        vis = (_prior(side_price) == messages.price[:, None]) & (_prior(side_size) > 0)
        at_visible |= (messages.direction == direction) & vis.any(1)
    inside = (messages.price > bid_p) & (messages.price < ask_p) & (bid_p > 0)
    sub = messages.size[messages.type == 1]
    gaps, depth = np.nan, np.nan
    if book.levels > 1:
        g, ok = [], []
        for p, s, sign in ((book.ask_price, book.ask_size, 1), (book.bid_price, book.bid_size, -1)):
            g.append(sign * np.diff(p, axis=1) / TICK)
            ok.append((s[:, 1:] > 0) & (s[:, :-1] > 0))
        g, ok = np.concatenate(g, 1), np.concatenate(ok, 1)  # type: ignore[assignment]  # the lists, joined
        gaps = float((g * ok * ww[:, None]).sum() / max((ok * ww[:, None]).sum(), 1e-300))
        s = np.concatenate([book.ask_size, book.bid_size], 1)
        depth = float(((s * ww[:, None]).sum()) / max(((s > 0) * ww[:, None]).sum(), 1e-300))
    return DayStatistics(
        seconds=seconds, messages_per_second=len(messages) / seconds if seconds else float("nan"),
        type_shares={k: n[k] / max(len(messages), 1) for k in range(1, 6)},
        partial_cancel_share=n[2] / max(n[2] + n[3], 1),
        hidden_at_visible_share=float(at_visible[h].mean()) if h.any() else float("nan"),
        hidden_inside_share=float(inside[h].mean()) if h.any() else float("nan"),
        spread_ticks_mean=float((spread * ww).sum()), spread_one_tick_share=float(((spread == 1) * ww).sum()),
        spread_ticks_p90=p90,
        depth_best=float(((book.ask_size[:, 0] + book.bid_size[:, 0]) / 2 * ww).sum()),
        depth_level_mean=depth, level_gap_ticks=gaps,
        submission_size_mean=float(sub.mean()) if sub.size else float("nan"),
        round_lot_share=float(((sub % 100 == 0) & (sub > 0)).mean()) if sub.size else float("nan"),
        mid_price=float((mid * ww).sum()))


def _live_order_seconds(messages: Messages) -> tuple[float, int, float]:
    """(integral of the number of live known orders over time in seconds, cancellations of known orders,
    share of removals (2, 3, 4) of known orders): orders are known from their submission (type 1) and
    leave on deletion or full execution."""
    live: dict[int, int] = {}
    area, cancels, known, last = 0.0, 0, 0, int(messages.time_ns[0])
    for tm, typ, oid, size in zip(messages.time_ns.tolist(), messages.type.tolist(), messages.order_id.tolist(),
                                  messages.size.tolist()):
        area += len(live) * (tm - last) / 1e9
        last = tm
        if typ == 1:
            live[oid] = size
        elif typ in (2, 3, 4) and oid in live:
            cancels += typ in (2, 3)
            known += 1
            live[oid] -= size
            if typ == 3 or live[oid] <= 0:
                del live[oid]
    removals = int(np.isin(messages.type, (2, 3, 4)).sum())
    return area, cancels, known / removals if removals else 1.0


def _fit_one(messages: Messages, book: OrderBook) -> dict[str, float]:
    """Sufficient counts of one day for :func:`calibrate` (pooled over days there)."""
    typ, d = messages.type, messages.direction.astype(np.int64)
    t = messages.time_ns
    opening = (typ == 1) & (t == t[0]) if int((t == t[0]).sum()) > 1 else np.zeros(len(t), bool)  # a book dump
    sub = (typ == 1) & ~opening
    ask_p, ask_s, bid_p, bid_s = _before(book)
    own = np.where(d > 0, bid_p, ask_p)
    two = (ask_s > 0) & (bid_s > 0)
    behind = np.where(d > 0, bid_p - messages.price, messages.price - ask_p) // TICK
    half = (ask_p - bid_p) // (2 * TICK) * TICK
    from_mid = np.where(d > 0, bid_p + half - messages.price, messages.price - ask_p + half) // TICK
    placed = sub & two & (from_mid >= 0)
    wide = sub & two & ((ask_p - bid_p) > TICK)
    improving = sub & two & (behind < 0) & (messages.price > bid_p) & (messages.price < ask_p)
    queued = sub & (own != 0) & (behind >= 0) & np.where(d > 0, bid_s, ask_s).astype(bool)
    run_start = np.ones(len(t), bool)
    run_start[1:] = ~((typ[1:] == 4) & (typ[:-1] == 4) & (t[1:] == t[:-1]) & (d[1:] == d[:-1]))
    hidden = typ == 5
    h_wide = hidden & two & ((ask_p - bid_p) > TICK)
    inside = h_wide & (messages.price > bid_p) & (messages.price < ask_p)
    sizes = messages.size[sub]
    rl = sizes[(sizes % 100 == 0) & (sizes > 0)]
    area, cancels, known = _live_order_seconds(messages)
    return dict(seconds=(t[-1] - t[0]) / 1e9, n_sub=float(sub.sum()), n_market=float(((typ == 4) & run_start).sum()),
                n_hidden=float(hidden.sum()), n2=float((typ == 2).sum()), n3=float((typ == 3).sum()),
                **_geometric_counts("best", behind[queued]),
                **_geometric_counts("mid", from_mid[placed]),
                complete=float(known > 0.99), depth_orders=_visible_orders(book, sizes),
                n_wide=float(wide.sum()), n_improving=float(improving.sum()),
                inside_max=float((-behind[improving]).max()) if improving.any() else 1.0,
                n_sizes=float(sizes.size), n_round=float(rl.size), round_lots_extra=float((rl // 100 - 1).sum()),
                n_hidden_wide=float(h_wide.sum()), n_hidden_inside=float(inside.sum()),
                area=area, cancels=float(cancels), levels=float(book.levels),
                mid=_first_mid(book))


def _geometric_counts(anchor: str, ticks: np.ndarray) -> dict[str, float]:
    """Counts for the censored geometric MLE of ``depth_decay``: the simulator draws min(max_depth, G), so
    values at the largest one seen count as censored there: decay = #uncensored / (#uncensored + sum)."""
    top = float(ticks.max()) if ticks.size else 0.0
    return {f"{anchor}_sum": float(ticks.sum()), f"{anchor}_open": float((ticks < top).sum()), f"{anchor}_max": top}


def _visible_orders(book: OrderBook, sizes: np.ndarray) -> float:
    """Time-unweighted mean number of orders in the visible book: its shares over the mean submitted size."""
    shares = book.ask_size.sum(1, dtype=np.float64) + book.bid_size.sum(1, dtype=np.float64)
    return float(shares.mean() / sizes.mean()) if sizes.size else float("nan")


def _first_mid(book: OrderBook) -> float:
    """The first mid price (dollars) with quotes on both sides, NaN if none."""
    both = (book.ask_size[:, 0] > 0) & (book.bid_size[:, 0] > 0)
    k = int(np.argmax(both))
    return float((book.ask_price[k, 0] + book.bid_price[k, 0]) / 2 / 10_000) if both.any() else float("nan")


def calibrate(days: Sequence[Day], base: Optional[SimulatorConfig] = None, anchor: Optional[str] = None,
              wide_spread_ticks: float = 2.0, refine: int = 0, refine_seconds: float = 1800.0) -> SimulatorConfig:
    """A :class:`SimulatorConfig` fitted to ``days`` (LobsterDay or (messages, book) pairs; counts pooled
    over days). Parameters the days cannot inform keep ``base``'s values (default: ``SimulatorConfig()``).
    ``anchor`` ("best" / "mid", see the simulator) defaults to "mid" where the mean spread exceeds
    ``wide_spread_ticks``.

    ``refine`` > 0 adds that many rounds of simulation (``refine_seconds`` each, seeded) that correct
    what an L-level file hides: ``depth_decay`` (mid anchor; ``cancel_rate`` for the best anchor) is
    scaled until the simulated L-level view (:func:`lobster_view`) has the days' mean spread, then the rates (limit, market,
    cancel) are scaled
    by one common factor (a change of time scale, which leaves the book's shape alone) to the days'
    message rate, and ``market_rate`` alone to the days' share of executions (types 4 and 5). Without it, the fit is the
    moments alone (exact for complete simulated histories)."""
    if not days:
        raise ValueError("calibrate needs at least one day: pass LobsterDay objects (find_lobster_days) or "
                         "(messages, book) pairs")
    loaded = [_load(day) for day in days]
    fits = [_fit_one(*day) for day in loaded]
    c = {k: float(np.nansum([f[k] for f in fits])) for k in fits[0]}
    base = base or SimulatorConfig()
    stats = [day_statistics(*day) for day in loaded]
    spread = float(np.mean([st.spread_ticks_mean for st in stats]))
    anchor = anchor or ("mid" if spread > wide_spread_ticks else "best")
    complete = all(f["complete"] for f in fits)
    # cancellations per live order: followed through order ids in a complete history (a simulated day, whose
    # file opens with the resting book: > 99% of removals are of orders it submitted); else over the orders of
    # the visible book (an L-level file hides the rest)
    live_seconds = c["area"] if complete else sum(f["depth_orders"] * f["seconds"] for f in fits)
    cancels = c["cancels"] if complete else c["n2"] + c["n3"]
    if c["seconds"] <= 0 or c["n_sub"] == 0:
        raise ValueError("calibrate: the days hold no submissions over a positive time span; pass whole days")
    market = c["n_market"] + c["n_hidden"]
    mean_extra = c["round_lots_extra"] / c["n_round"] if c["n_round"] else 0.0
    q = mean_extra / (1.0 + mean_extra)
    lot_scale = -1.0 / np.log(q) if q > 0 else 1e-3
    opened, summed = c[f"{anchor}_open"], c[f"{anchor}_sum"]
    deepest = max(f[f"{anchor}_max"] for f in fits)
    fit = replace(
        base, levels=int(min(f["levels"] for f in fits)), initial_price=round(float(np.nanmean([f["mid"] for f in fits])), 2),
        limit_rate=c["n_sub"] / c["seconds"], market_rate=market / c["seconds"],
        hidden_exec_prob=c["n_hidden"] / market if market else 0.0,
        cancel_rate=cancels / live_seconds if live_seconds > 0 and cancels else base.cancel_rate, anchor=anchor,
        partial_cancel_prob=c["n2"] / (c["n2"] + c["n3"]) if c["n2"] + c["n3"] else base.partial_cancel_prob,
        depth_decay=opened / (opened + summed) if opened else base.depth_decay, max_depth=int(deepest),
        improve_prob=c["n_improving"] / c["n_wide"] if c["n_wide"] else base.improve_prob,
        improve_max_ticks=max(1, int(max(f["inside_max"] for f in fits))),
        round_lot_prob=c["n_round"] / c["n_sizes"] if c["n_sizes"] else base.round_lot_prob,
        lot_scale=float(lot_scale),
        hidden_inside_prob=c["n_hidden_inside"] / c["n_hidden_wide"] if c["n_hidden_wide"] else base.hidden_inside_prob)
    n_msgs = sum(len(m) for m, _ in loaded)
    execs = sum(int(np.isin(m.type, (4, 5)).sum()) for m, _ in loaded) / n_msgs
    return _refine(fit, spread, n_msgs / c["seconds"], execs, refine, refine_seconds) if refine > 0 else fit


def _refine(fit: SimulatorConfig, spread: float, rate: float, execs: float, rounds: int,
            seconds: float) -> SimulatorConfig:
    """Match the simulated L-level view's mean spread (via ``depth_decay``), share of executions (via
    ``market_rate``) and message rate (a common time scale of the rates) to the days' (see :func:`calibrate`)."""
    levels = fit.levels
    sim = replace(fit, days=1, end_ms=fit.start_ms + int(seconds * 1000), levels=max(levels, 10))
    for r in range(rounds):
        st = day_statistics(*lobster_view(*simulate_day(replace(sim, seed=sim.seed + r), 0), levels))
        wider = (st.spread_ticks_mean / spread) ** 0.8  # > 1: the simulated spread is too wide
        # the spread's knob: how far from the mid orders go (mid anchor), else how many orders rest (best)
        decay = float(np.clip(sim.depth_decay * wider, 1e-3, 1.0)) if sim.anchor == "mid" else sim.depth_decay
        cancel = sim.cancel_rate if sim.anchor == "mid" else sim.cancel_rate / wider
        k = rate / st.messages_per_second
        e = (execs / max(st.type_shares[4] + st.type_shares[5], 1e-6)) ** 0.8
        sim = replace(sim, depth_decay=decay, max_depth=max(sim.max_depth, int(np.ceil(5 / decay))),
                      limit_rate=sim.limit_rate * k, market_rate=sim.market_rate * k * e, cancel_rate=cancel * k)
    return replace(sim, days=fit.days, end_ms=fit.end_ms, levels=fit.levels, seed=fit.seed)


#: Presets for the thesis' kinds of stock (``preset(name)``; docs/orderbook.md has their sources):
#: ``ford_like``: a ~$9 stock quoted one tick wide (the simulator's dense book) with hidden executions at
#: ~6% of the messages (no Ford file is at hand: set by hand, not fitted);
#: ``amzn_2012``: ``calibrate(refine=6)`` on LOBSTER's public AMZN 2012-06-21 level-1 sample (a $223 stock,
#: mean spread ~13 ticks, hidden executions inside the spread; rounded).
PRESETS: dict[str, dict] = {
    "ford_like": dict(ticker="FSIM", initial_price=9.0, market_rate=3.0, hidden_exec_prob=0.7),
    "amzn_2012": dict(ticker="AMZNSIM", initial_price=223.56, limit_rate=2.95, market_rate=0.458, cancel_rate=0.469,
                      partial_cancel_prob=0.001, hidden_exec_prob=0.27, depth_decay=0.0766, max_depth=66,
                      anchor="mid", improve_prob=0.49, improve_max_ticks=66, round_lot_prob=0.61, lot_scale=0.76,
                      hidden_inside_prob=1.0),
}


def preset(name: str, **overrides) -> SimulatorConfig:
    """The :class:`SimulatorConfig` of preset ``name`` (:data:`PRESETS`), with ``overrides``."""
    if name not in PRESETS:
        raise ValueError(f"preset={name!r} is unknown; known presets: {sorted(PRESETS)}")
    return SimulatorConfig.from_dict({**PRESETS[name], **overrides})
