"""A seeded order-flow simulator that writes exact LOBSTER files (stand-in for licensed data).

LOBSTER data cannot be downloaded freely, so tests, benchmarks and the example configs run on
days generated here. The market is a price-time-priority limit order book with a $0.01 tick:

* limit orders arrive at ``limit_rate`` per second, at a geometric number of ticks behind the
  best quote of their side (success probability ``depth_decay``), or, with probability
  ``improve_prob`` when the spread is wider than a tick, 1 to ``improve_max_ticks`` ticks inside it;
  in round lots (probability ``round_lot_prob``; 100 x (1 + floor(lot_scale x Exp(1))) shares) or
  odd lots (1-99 shares, uniform). With ``anchor="mid"`` the geometric number of ticks is counted
  from the middle of the spread instead (sparse books with wide spreads, as for high-priced stocks);
* each resting order is cancelled at ``cancel_rate`` per second (partially with probability
  ``partial_cancel_prob``: type 2, else deleted: type 3);
* market orders arrive at ``market_rate`` per second and walk the book in price-time priority,
  one visible-execution message (type 4) per limit order they hit; a fraction
  ``hidden_exec_prob`` executes against hidden liquidity instead (type 5, book unchanged), at the
  best quote or, with probability ``hidden_inside_prob`` when the spread is wider than a tick, at a
  uniformly drawn price strictly inside the spread (as real hidden executions mostly are);
* a latent drift ``mu`` (an Ornstein-Uhlenbeck process, unit variance, time scale
  ``signal_timescale`` seconds) tilts both the side of market orders and the side of new limit
  orders by ``sigmoid(signal_strength * mu)``: buying pressure piles up bid queues *and* lifts
  the ask, so queue imbalance carries information about the next price moves (as in real
  books) that a model can learn and that must carry over to held-out days.

Before each day's window opens the market runs ``warmup_seconds`` unrecorded; its resting
orders are then written as submissions at the opening time, so the message file is a complete
history and replaying it reproduces the order-book file row for row.

:mod:`.calibrate` fits these parameters to LOBSTER days and holds presets for kinds of stock.
"""
from __future__ import annotations

import math
import random
from collections import deque
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .lobster import (Messages, OrderBook, PriceLevels, book_from_rows, lobster_file_name, write_messages,
                      write_orderbook)

__all__ = ["SimulatorConfig", "simulate_day", "write_simulated_days"]

TICK = 100  # $0.01 in LOBSTER price units (dollars x 10000)


@dataclass(frozen=True)
class SimulatorConfig:
    """Parameters of :func:`simulate_day` / :func:`write_simulated_days` (see the module doc)."""

    ticker: str = "SIM"
    days: int = 20
    first_date: str = "2019-09-03"
    start_ms: int = 34_200_000  # 9:30, LOBSTER's milliseconds after midnight
    end_ms: int = 37_800_000    # 10:30: the first hour of trading, as in the thesis
    levels: int = 10
    initial_price: float = 10.0
    limit_rate: float = 10.0
    market_rate: float = 1.5
    cancel_rate: float = 0.025
    partial_cancel_prob: float = 0.25
    hidden_exec_prob: float = 0.05
    depth_decay: float = 0.25
    max_depth: int = 25
    improve_prob: float = 0.3
    improve_max_ticks: int = 1
    round_lot_prob: float = 0.7
    lot_scale: float = 1.0
    hidden_inside_prob: float = 0.0
    anchor: str = "best"
    signal_timescale: float = 20.0
    signal_strength: float = 1.0
    warmup_seconds: float = 120.0
    seed: int = 0

    def __post_init__(self) -> None:
        checks = {"days": self.days >= 1, "levels": self.levels >= 1, "end_ms": self.end_ms > self.start_ms,
                  "initial_price": self.initial_price >= 1.0, "limit_rate": self.limit_rate > 0,
                  "market_rate": self.market_rate >= 0, "cancel_rate": self.cancel_rate > 0,
                  "depth_decay": 0 < self.depth_decay <= 1, "signal_timescale": self.signal_timescale > 0,
                  "partial_cancel_prob": 0 <= self.partial_cancel_prob <= 1,
                  "hidden_exec_prob": 0 <= self.hidden_exec_prob <= 1, "warmup_seconds": self.warmup_seconds >= 0,
                  "improve_prob": 0 <= self.improve_prob <= 1, "round_lot_prob": 0 <= self.round_lot_prob <= 1,
                  "improve_max_ticks": int(self.improve_max_ticks) == self.improve_max_ticks >= 1,
                  "lot_scale": self.lot_scale > 0, "hidden_inside_prob": 0 <= self.hidden_inside_prob <= 1,
                  "max_depth": self.max_depth >= 0, "anchor": self.anchor in ("best", "mid")}
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"simulate.{name}={getattr(self, name)!r} is out of range; see SimulatorConfig")

    @classmethod
    def from_dict(cls, values: Optional[dict[str, Any]]) -> "SimulatorConfig":
        """Build from a config dict, naming an unknown key (a typo) instead of ignoring it."""
        values = dict(values or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"simulate has unknown keys {unknown}; known keys: {sorted(known)}")
        return cls(**values)


class _Market:
    """The order book with individual orders (FIFO queues per price) and its message log."""

    def __init__(self, rnd: random.Random, levels: int) -> None:
        self.rnd, self.levels = rnd, levels
        self.sides = {-1: PriceLevels(+1, levels), 1: PriceLevels(-1, levels)}  # direction -1: ask side, +1: bid side
        self.queues: dict[tuple[int, int], deque] = {}
        self.orders: dict[int, list] = {}  # id -> [direction, price, size]
        self.live: list[int] = []
        self.pos: dict[int, int] = {}
        self.next_id = 1
        self.log: list[tuple] = []
        self.rows: list[tuple] = []
        self.recording = False

    def emit(self, time_ns: int, typ: int, oid: int, size: int, price: int, direction: int) -> None:
        if self.recording:
            self.log.append((time_ns, typ, oid, size, price, direction))
            self.rows.append(self.sides[-1].top() + self.sides[1].top())

    def add(self, t: int, direction: int, price: int, size: int) -> None:
        oid, self.next_id = self.next_id, self.next_id + 1
        self.orders[oid] = [direction, price, size]
        self.queues.setdefault((direction, price), deque()).append(oid)
        self.pos[oid] = len(self.live)
        self.live.append(oid)
        self.sides[direction].add(price, size)
        self.emit(t, 1, oid, size, price, direction)

    def remove(self, oid: int, size: int) -> None:
        direction, price, left = order = self.orders[oid]
        self.sides[direction].add(price, -size)
        order[2] = left - size
        if order[2] == 0:
            queue = self.queues[(direction, price)]
            queue.remove(oid) if queue[0] != oid else queue.popleft()
            if not queue:
                del self.queues[(direction, price)]
            del self.orders[oid]
            i, last = self.pos.pop(oid), self.live.pop()
            if last != oid:
                self.live[i], self.pos[last] = last, i

    def cancel(self, t: int, partial_prob: float) -> None:
        oid = self.live[int(self.rnd.random() * len(self.live))]
        direction, price, left = self.orders[oid]
        if len(self.sides[direction].keys) == 1 and left == self.sides[direction].size[direction * -price]:
            return  # the last order of its side stays
        if left > 1 and self.rnd.random() < partial_prob:
            size, typ = 1 + int(self.rnd.random() * (left - 1)), 2
        else:
            size, typ = left, 3
        self.remove(oid, size)
        self.emit(t, typ, oid, size, price, direction)

    def market(self, t: int, resting: int, size: int) -> None:
        """A market order against the ``resting`` side (-1: a buy hits asks), walking the book."""
        side = self.sides[resting]
        while size > 0 and side.keys:
            price = side.best()
            assert price is not None  # the side has levels (the loop's condition)
            oid = self.queues[(resting, price)][0]
            fill = min(size, self.orders[oid][2])
            if len(side.keys) == 1 and fill >= side.size[side.keys[0]]:
                break  # never empty a side: real books keep quotes on both sides
            self.remove(oid, fill)
            self.emit(t, 4, oid, fill, price, resting)
            size -= fill


def _lot(rnd: random.Random, cfg: SimulatorConfig) -> int:
    if rnd.random() < cfg.round_lot_prob:
        return 100 * (1 + int(-math.log(1.0 - rnd.random()) * cfg.lot_scale))
    return 1 + int(rnd.random() * 99)


def _run(m: _Market, cfg: SimulatorConfig, t0: int, t1: int, mu: float, ref: int) -> tuple[float, int]:
    """Simulate events in [t0, t1) ns; returns the drift and reference price at the end."""
    rnd, t = m.rnd, t0
    while True:
        rate = cfg.limit_rate + cfg.market_rate + cfg.cancel_rate * len(m.live)
        dt = -math.log(1.0 - rnd.random()) / rate
        t += max(1, int(dt * 1e9))
        if t >= t1:
            return mu, ref
        decay = math.exp(-dt / cfg.signal_timescale)
        mu = mu * decay + math.sqrt(1.0 - decay * decay) * rnd.gauss(0.0, 1.0)
        p_buy = 1.0 / (1.0 + math.exp(-cfg.signal_strength * mu))
        direction = 1 if rnd.random() < p_buy else -1
        u = rnd.random() * rate
        ask, bid = m.sides[-1].best(), m.sides[1].best()
        if ask is not None and bid is not None:
            ref = (ask + bid) // 2
        if u < cfg.limit_rate:
            _limit(m, cfg, t, direction, ask, bid, ref)
        elif u < cfg.limit_rate + cfg.market_rate:
            resting = -direction
            best = m.sides[resting].best()
            if best is None:
                continue
            if rnd.random() < cfg.hidden_exec_prob:
                oid, m.next_id = m.next_id, m.next_id + 1
                m.emit(t, 5, oid, _lot(rnd, cfg), _hidden_price(rnd, cfg, best, ask, bid), resting)
            else:
                m.market(t, resting, _lot(rnd, cfg))
        elif m.live:
            m.cancel(t, cfg.partial_cancel_prob)


def _hidden_price(rnd: random.Random, cfg: SimulatorConfig, best: int, ask: Optional[int], bid: Optional[int]) -> int:
    """The best quote, or (``hidden_inside_prob``) a price strictly inside a spread wider than a tick."""
    if cfg.hidden_inside_prob > 0 and ask is not None and bid is not None and ask - bid > TICK \
            and rnd.random() < cfg.hidden_inside_prob:
        return bid + TICK * (1 + int(rnd.random() * ((ask - bid) // TICK - 1)))
    return best


def _limit(m: _Market, cfg: SimulatorConfig, t: int, direction: int, ask: Optional[int], bid: Optional[int],
           ref: int) -> None:
    """A limit order of ``direction`` (+1 buy) a geometric number of ticks behind its best quote."""
    rnd = m.rnd
    depth = min(cfg.max_depth, int(math.log(1.0 - rnd.random()) / math.log(1.0 - cfg.depth_decay))
                if cfg.depth_decay < 1 else 0)
    own, other = (bid, ask) if direction == 1 else (ask, bid)
    if cfg.anchor == "mid" and ask is not None and bid is not None:
        half = (ask - bid) // (2 * TICK) * TICK  # the mid rounded away from the own side's best: never crosses
        price = (bid + half - depth * TICK) if direction == 1 else (ask - half + depth * TICK)
        if price > 0:
            m.add(t, direction, price, _lot(rnd, cfg))
        return
    if own is None:
        own = (other - direction * TICK) if other is not None else ref - direction * TICK
    if other is not None and abs(other - own) > TICK and rnd.random() < cfg.improve_prob:
        inside = 1 if cfg.improve_max_ticks == 1 else \
            1 + int(rnd.random() * min(cfg.improve_max_ticks, abs(other - own) // TICK - 1))
        price = own + direction * inside * TICK  # inside the spread, never crossing it
    else:
        price = own - direction * depth * TICK
    if price > 0:
        m.add(t, direction, price, _lot(rnd, cfg))


def _to_arrays(m: _Market, levels: int) -> tuple[Messages, OrderBook]:
    log = np.array(m.log, dtype=np.int64).reshape(-1, 6)
    msgs = Messages(log[:, 0].copy(), log[:, 1].astype(np.int8), log[:, 2].copy(), log[:, 3].copy(),
                    log[:, 4].copy(), log[:, 5].astype(np.int8))
    return msgs, book_from_rows(m.rows, levels)


def simulate_day(cfg: SimulatorConfig, day: int, open_price: Optional[int] = None) -> tuple[Messages, OrderBook]:
    """One day's window [start_ms, end_ms): its message and order-book arrays (seeded by
    ``cfg.seed`` and ``day``). ``open_price`` (LOBSTER units) defaults to ``cfg.initial_price``."""
    rnd = random.Random(cfg.seed * 1_000_003 + day)
    m = _Market(rnd, cfg.levels)
    ref = open_price if open_price is not None else int(round(cfg.initial_price * 100)) * TICK
    t_open, t_close = cfg.start_ms * 1_000_000, cfg.end_ms * 1_000_000
    t_warm = t_open - int(cfg.warmup_seconds * 1e9)
    mu = rnd.gauss(0.0, 1.0)
    for k in range(1, 6):  # a thin seed book so the warm-up starts with two-sided quotes
        m.add(t_warm, 1, ref - k * TICK, 100)
        m.add(t_warm, -1, ref + k * TICK, 100)
    mu, ref = _run(m, cfg, t_warm, t_open, mu, ref)
    resting = sorted(m.orders.items())  # by id = arrival order, so FIFO priority is kept
    # checker: re-initialises the reused _Market in place (same class)
    m.__init__(rnd, cfg.levels)  # type: ignore[misc]
    m.recording = True
    for _, (direction, price, size) in resting:
        m.add(t_open, direction, price, size)
    _run(m, cfg, t_open, t_close, mu, ref)
    return _to_arrays(m, cfg.levels)


def write_simulated_days(data_dir: str | Path, cfg: SimulatorConfig) -> list[Path]:
    """Write ``cfg.days`` simulated business days of LOBSTER files into ``data_dir``; days whose
    two files already exist are kept (idempotent). A small JSON note records the configuration."""
    import json

    root = Path(data_dir)
    root.mkdir(parents=True, exist_ok=True)
    dates = np.busday_offset(np.datetime64(cfg.first_date), np.arange(cfg.days), roll="forward")
    price = int(round(cfg.initial_price * 100)) * TICK
    written = []
    for day, date in enumerate(str(d) for d in dates):
        names = [root / lobster_file_name(cfg.ticker, date, cfg.start_ms, cfg.end_ms, kind, cfg.levels)
                 for kind in ("message", "orderbook")]
        if not all(p.exists() for p in names):
            msgs, book = simulate_day(cfg, day, price)
            for path, writer, data in zip(names, (write_messages, write_orderbook), (msgs, book)):
                tmp = path.with_suffix(".tmp")
                writer(tmp, data)  # type: ignore[operator]  # write_messages / write_orderbook, each its own data
                tmp.replace(path)
        written.extend(names)
        # next day's open: this day's open moved by a seeded overnight walk (days stay independent)
        price = max(TICK * 100, price + TICK * int(np.random.default_rng([cfg.seed, day]).integers(-20, 21)))
    (root / f"{cfg.ticker}_simulator.json").write_text(json.dumps(asdict(cfg), indent=1))
    return written
