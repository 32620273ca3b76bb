"""Replay a LOBSTER message file against its order-book file: a consistency report.

Order-book row k is the book after message k. :func:`replay` applies the messages to a book and
compares every row it reaches with the file's row. Two starting points:

* ``start=None``: a complete history from an empty book (the simulator writes such days): every
  level of the book is known, so each row must equal the file's row.
* ``start=k``: the file's row k is the state after message k (a real LOBSTER day opens on a
  non-empty book). An L-level file shows only the L best levels of each side, and LOBSTER's
  L-level message file leaves out the messages that touch deeper levels, so the book beyond the
  last shown level of a side is *unknown*, not absent: a message there is not applied, and a level
  that comes into view from there (after a deletion or an execution at the top) is learnt from the
  file. Only a full side has hidden depth; a side with fewer than L levels shows all of it.

Each compared row is *equal* (replay == file row), *hidden depth* (the two differ only at prices
beyond the previous row's last shown level of a full side) or a *contradiction* (they differ
where both are known, or a message removes shares a known level does not hold). A contradiction is
recorded and the replay resynchronises to the file's row, so one bad message counts once instead
of corrupting the rest of the day. Types 5 (hidden execution), 6 (cross trade) and 7 (halt) leave
the visible book unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from .lobster import MESSAGE_TYPES, Messages, OrderBook, PriceLevels

__all__ = ["ReplayReport", "replay"]

_UNBOUNDED = float("inf")


@dataclass
class ReplayReport:
    """Row counts of a replay; ``examples`` holds the first contradictions as one line each
    (``line k`` is line k of both files, 1-based)."""

    start: Optional[int]
    rows: int = 0
    equal: int = 0
    hidden_depth: int = 0
    contradictions: int = 0
    examples: list[str] = field(default_factory=list)

    @property
    def consistent(self) -> bool:
        return self.contradictions == 0

    def __str__(self) -> str:
        where = "an empty book" if self.start is None else f"row {self.start + 1}"
        head = (f"replay from {where}: {self.rows} rows, {self.equal} equal, {self.hidden_depth} differ only in "
                f"hidden depth, {self.contradictions} contradict")
        return head + (f" (first: {self.examples[0]})" if self.examples else "")


class _Side:
    """One side: the known levels (PriceLevels) and ``bound``, the signed key of the last shown level
    of a full side (beyond it the book is unknown; ``inf`` when everything is known)."""

    def __init__(self, sign: int, levels: int) -> None:
        self.sign, self.levels = sign, levels
        self.book = PriceLevels(sign, levels)
        self.bound = _UNBOUNDED

    def known(self, price: int) -> bool:
        return self.sign * price <= self.bound

    def reset(self, prices: list[int], sizes: list[int]) -> None:
        """Take the state from a file row: its shown levels; hidden depth beyond a full side."""
        self.book = PriceLevels(self.sign, self.levels)
        for p, s in zip(prices, sizes):
            if s > 0:
                self.book.add(p, s)
        full = sizes[-1] > 0
        self.bound = self.sign * prices[-1] if full else _UNBOUNDED

    def forget_beyond(self, prices: list[int], sizes: list[int]) -> None:
        """After a row that matched: levels pushed out of view become unknown (their messages may be
        left out of an L-level file), so the bound moves to the row's last shown level."""
        if sizes[-1] > 0:
            self.bound = self.sign * prices[-1]
            for key in self.book.keys[self.levels:]:
                self.book.add(self.sign * key, -self.book.size[key])
        else:
            self.bound = _UNBOUNDED

    def agrees(self, prices: list[int], sizes: list[int]) -> bool:
        """Do the known levels and a file row agree wherever both are known?"""
        shown = {p: s for p, s in zip(prices, sizes) if s > 0}
        last = self.sign * prices[-1] if sizes[-1] > 0 else _UNBOUNDED
        limit = min(self.bound, last)
        mine = {self.sign * k: v for k, v in self.book.size.items() if k <= limit}
        return mine == {p: s for p, s in shown.items() if self.sign * p <= limit}


def _row(book: OrderBook, k: int, side: int) -> tuple[list[int], list[int]]:
    if side < 0:  # direction -1 = sell orders = ask side
        return book.ask_price[k].tolist(), book.ask_size[k].tolist()
    return book.bid_price[k].tolist(), book.bid_size[k].tolist()


def replay(messages: Messages, book: OrderBook, start: Optional[int] = None, examples: int = 5) -> ReplayReport:
    """Replay ``messages`` against ``book`` (the order-book file, row k = state after message k)
    and count equal / hidden-depth / contradicting rows (see the module doc). ``start=None``
    replays a complete history from an empty book; ``start=k`` starts from the file's row k (the
    state after message k, 0-based) and replays messages k+1, k+2, ...; ``examples`` keeps the
    first contradictions as one line each."""
    if len(messages) != len(book):
        raise ValueError(f"the message file has {len(messages)} rows but the order-book file {len(book)}: "
                         "row k of the order book must be the state after message k")
    if start is not None and not 0 <= start < len(book):
        raise ValueError(f"start={start} is outside the {len(book)} rows; pass 0 <= start < {len(book)} or None")
    levels = book.levels
    sides = {-1: _Side(+1, levels), 1: _Side(-1, levels)}
    if start is not None:
        for d, s in sides.items():
            s.reset(*_row(book, start, d))
    report = ReplayReport(start)
    first = 0 if start is None else start + 1
    msgs = zip(messages.type[first:].tolist(), messages.size[first:].tolist(), messages.price[first:].tolist(),
               messages.direction[first:].tolist())
    for k, (typ, size, price, direction) in enumerate(msgs, start=first):
        side, problem = sides[direction], ""
        if typ in (1, 2, 3, 4) and side.known(price):
            if side.book.add(price, size if typ == 1 else -size) < 0:
                problem = f"{MESSAGE_TYPES[typ]} of {size} shares at {price} but the book holds fewer there"
        rows = {d: _row(book, k, d) for d in (-1, 1)}
        report.rows += 1
        if not problem and all(s.book.top() == rows[d] for d, s in sides.items()):
            report.equal += 1
            if start is not None:
                for d, s in sides.items():
                    s.forget_beyond(*rows[d])
            continue
        if not problem:
            bad = [d for d, s in sides.items() if not s.agrees(*rows[d])]
            if not bad:
                report.hidden_depth += 1
            else:
                name = "ask" if bad[0] < 0 else "bid"
                problem = f"{name} side differs from the replay where both are known after {MESSAGE_TYPES[typ]}"
        if problem:
            report.contradictions += 1
            if len(report.examples) < examples:
                report.examples.append(f"line {k + 1}: {problem}")
        for d, s in sides.items():
            s.reset(*rows[d])
    return report
