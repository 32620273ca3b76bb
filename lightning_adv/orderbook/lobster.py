"""Read and write LOBSTER limit order book files (the data of thesis chapter 3; replay: ``replay.py``).

LOBSTER (https://lobsterdata.com) delivers one trading day of one ticker as two CSV files
without header, named ``TICKER_DATE_START_END_{message|orderbook}_LEVEL.csv`` (START/END in
milliseconds after midnight, e.g. ``AAPL_2012-06-21_34200000_57600000_message_10.csv``):

* message file, one row per event: ``time, type, order id, size, price, direction`` -- time in
  seconds after midnight with up to nanosecond decimals, price in dollars x 10000, direction
  -1 sell / +1 buy limit order. Types: 1 submission, 2 partial cancellation, 3 deletion,
  4 execution of a visible order, 5 execution of a hidden order, 6 cross trade, 7 trading halt;
* order-book file, row k = the book *after* message k: ``ask price 1, ask size 1, bid price 1,
  bid size 1, ask price 2, ...`` for LEVEL levels; an empty level is written as ask price
  9999999999 / bid price -9999999999 with size 0.

Parsing uses ``np.loadtxt`` (numpy >= 1.23 has a C parser: ~20 million fields/s here, see
``benchmarks/bench_orderbook_data.py``); when it fails, a line-by-line scan finds the first bad
line, so the error names the file, the line and what was expected; the values are then checked
(prices, sizes, directions, types, level order: see :func:`read_messages`, :func:`read_orderbook`).
No pickle anywhere.
"""
from __future__ import annotations

import bisect
import csv
import os
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Optional, Union

import numpy as np

__all__ = [
    "EMPTY_ASK_PRICE", "EMPTY_BID_PRICE", "PRICE_SCALE", "MESSAGE_TYPES", "LobsterDay", "Messages",
    "OrderBook", "find_lobster_days", "lobster_file_name", "read_messages", "read_orderbook",
    "write_messages", "write_orderbook", "crossed_rows", "PriceLevels", "book_from_rows",
]

PRICE_SCALE = 10_000  # LOBSTER price = dollars x 10000
EMPTY_ASK_PRICE = 9_999_999_999
EMPTY_BID_PRICE = -9_999_999_999
MESSAGE_TYPES = {1: "submission", 2: "partial cancellation", 3: "deletion", 4: "visible execution",
                 5: "hidden execution", 6: "cross trade", 7: "trading halt"}
_MESSAGE_COLUMNS = "time, type, order id, size, price, direction"
_MPID = re.compile(r"^[A-Za-z0-9]*$")
_NAME = re.compile(r"^(?P<ticker>.+)_(?P<date>\d{4}-\d{2}-\d{2})_(?P<start>\d+)_(?P<end>\d+)_"
                   r"(?P<kind>message|orderbook)_(?P<levels>\d+)\.csv$")
PathLike = Union[str, os.PathLike]


@dataclass(frozen=True)
class LobsterDay:
    """One ticker-day: its message and order-book file (START/END in ms after midnight)."""

    ticker: str
    date: str
    start_ms: int
    end_ms: int
    levels: int
    message_path: Path
    orderbook_path: Path


@dataclass
class Messages:
    """A message file as arrays of length N (time as int64 nanoseconds after midnight)."""

    time_ns: np.ndarray    # int64
    type: np.ndarray       # int8, 1..7
    order_id: np.ndarray   # int64
    size: np.ndarray       # int64 shares
    price: np.ndarray      # int64 dollars x 10000
    direction: np.ndarray  # int8, -1 sell / +1 buy

    def __len__(self) -> int:
        return int(self.time_ns.shape[0])

    def __getitem__(self, index: Union[slice, np.ndarray]) -> "Messages":
        return Messages(**{f.name: getattr(self, f.name)[index] for f in fields(self)})


@dataclass
class OrderBook:
    """An order-book file as four (N, L) int64 arrays; level 0 is the best price of its side."""

    ask_price: np.ndarray
    ask_size: np.ndarray
    bid_price: np.ndarray
    bid_size: np.ndarray

    def __len__(self) -> int:
        return int(self.ask_price.shape[0])

    @property
    def levels(self) -> int:
        return int(self.ask_price.shape[1])

    def __getitem__(self, index: Union[slice, np.ndarray]) -> "OrderBook":
        return OrderBook(*(getattr(self, f.name)[index] for f in fields(self)))


def lobster_file_name(ticker: str, date: str, start_ms: int, end_ms: int, kind: str, levels: int) -> str:
    """``TICKER_DATE_START_END_{message|orderbook}_LEVEL.csv``."""
    return f"{ticker}_{date}_{int(start_ms)}_{int(end_ms)}_{kind}_{int(levels)}.csv"


def find_lobster_days(data_dir: PathLike, ticker: Optional[str] = None) -> list[LobsterDay]:
    """All complete ticker-days in ``data_dir`` sorted by date; raises ``ValueError`` when there are
    none, when a message file lacks its order-book file (or vice versa), or when ``ticker=None``
    is ambiguous (several tickers)."""
    root = Path(data_dir)
    if not root.is_dir():
        raise ValueError(f"data_dir={str(root)!r} is not a directory: point it at your LOBSTER files "
                         "(or set simulate to generate some)")
    found: dict[tuple, dict[str, Path]] = {}
    for path in sorted(root.iterdir()):
        m = _NAME.match(path.name)
        if m and (ticker is None or m["ticker"] == ticker):
            key = (m["ticker"], m["date"], int(m["start"]), int(m["end"]), int(m["levels"]))
            found.setdefault(key, {})[m["kind"]] = path
    if not found:
        which = f"ticker {ticker!r}" if ticker else "any ticker"
        raise ValueError(f"no LOBSTER files for {which} in data_dir={str(root)!r}: expected names like "
                         "TICKER_2019-09-03_34200000_37800000_message_10.csv with a matching _orderbook_ file")
    tickers = sorted({k[0] for k in found})
    if len(tickers) > 1:
        raise ValueError(f"ticker=None but data_dir={str(root)!r} holds several tickers {tickers}: pass ticker=...")
    days = []
    for key, kinds in sorted(found.items(), key=lambda kv: (kv[0][1], kv[0][2])):
        for kind in ("message", "orderbook"):
            if kind not in kinds:
                other = next(iter(kinds.values()))
                raise ValueError(f"{other} has no matching {kind} file "
                                 f"{lobster_file_name(key[0], key[1], key[2], key[3], kind, key[4])} in {root}")
        days.append(LobsterDay(*key[:4], key[4], kinds["message"], kinds["orderbook"]))
    dates = [d.date for d in days]
    if len(set(dates)) != len(dates):
        raise ValueError(f"data_dir={str(root)!r} holds several files for one date ({dates}); keep one "
                         "time window and one level count per day")
    return days


def _diagnose(path: Path, columns: Optional[int], what: str) -> str:
    """Locate the first malformed line of a CSV file of numbers (slow path, only after a failure)."""
    with open(path, newline="") as f:
        for lineno, row in enumerate(csv.reader(f), start=1):
            n = columns if columns is not None else (len(row) if len(row) % 4 == 0 and row else -1)
            if len(row) != n:
                hint = "; the file uses ';' as separator, LOBSTER writes ','" if ";" in ",".join(row) else ""
                return f"{path}, line {lineno}: expected {columns or 'a multiple of 4'} comma-separated " \
                       f"values ({what}), got {len(row)}: {','.join(row)[:80]!r}{hint}"
            for value in row[:6] if columns == 7 else row:
                try:
                    float(value)
                except ValueError:
                    return f"{path}, line {lineno}: expected numbers ({what}), got {value!r}"
            if columns == 7 and not _MPID.match(row[6]):
                return f"{path}, line {lineno}: expected an MPID (letters and digits, or null) in the extra 7th " \
                       f"column, got {row[6]!r}"
            columns = n
    return f"{path}: could not be parsed as {what}"


def _load(path: PathLike, columns: Optional[int], what: str, dtype: type) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"LOBSTER file {path} does not exist")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}, line 1: the file is empty; expected rows of {what}")
    try:
        if columns == 7:  # a message file with a trailing MPID column: parse as text, check it, drop it
            text = np.loadtxt(path, delimiter=",", dtype=str, ndmin=2, comments=None)
            if text.shape[1] != 7 or not all(_MPID.match(v) for v in np.unique(text[:, 6]).tolist()):
                raise ValueError
            return text[:, :6].astype(dtype)
        data: np.ndarray = np.loadtxt(path, delimiter=",", dtype=dtype, ndmin=2)
    except ValueError:
        raise ValueError(_diagnose(path, columns, what)) from None
    if columns is not None and data.shape[1] != columns:
        raise ValueError(_diagnose(path, columns, what))
    return data


def _check(path: PathLike, bad: np.ndarray, what: str, values: Optional[np.ndarray] = None) -> None:
    """Raise naming the first bad line (and its value) of ``bad`` (one flag per row)."""
    if bad.any():
        line = int(np.flatnonzero(bad)[0])
        got = f", got {values[line].tolist()}" if values is not None else ""
        raise ValueError(f"{path}, line {line + 1}: {what}{got}")


def _message_columns(path: PathLike) -> int:
    """6, or 7 when the file carries LOBSTER's optional trailing MPID column (first line decides)."""
    if not Path(path).is_file():
        return 6  # _load says that the file is missing
    with open(path) as f:
        first = f.readline()
    return 7 if first.count(",") == 6 else 6


def read_messages(path: PathLike) -> Messages:
    """Read a LOBSTER message file; times become int64 nanoseconds (exact for 9 decimals).

    Checked with file and line: integers in columns 2-6, types 1..7, directions -1/+1, sizes and
    prices > 0 (a trading halt, type 7, has size 0 and price -1 / 0 / 1 as LOBSTER defines), time
    never going backwards. A 7th column (the MPID attribution some exports carry: letters and
    digits or ``null``) is accepted and dropped; any other column count is an error.
    """
    data = _load(path, _message_columns(path), _MESSAGE_COLUMNS, np.float64)
    ints = data[:, 1:]
    _check(path, (ints != np.round(ints)).any(1), "expected integers in columns 2-6 (type, order id, size, price, "
           "direction)", data[:, 1:])
    msg = Messages(np.rint(data[:, 0] * 1e9).astype(np.int64), data[:, 1].astype(np.int8),
                   data[:, 2].astype(np.int64), data[:, 3].astype(np.int64), data[:, 4].astype(np.int64),
                   data[:, 5].astype(np.int8))
    _check(path, (msg.type < 1) | (msg.type > 7), "expected message type 1..7 (column 2)", msg.type)
    _check(path, (msg.direction != 1) & (msg.direction != -1), "expected direction -1 or 1 (column 6)", msg.direction)
    halt = msg.type == 7
    _check(path, ~halt & (msg.size <= 0), "expected a size > 0 (column 4)", msg.size)
    _check(path, ~halt & (msg.price <= 0), "expected a price > 0 (column 5, dollars x 10000); only a trading "
           "halt (type 7) carries -1 / 0 / 1", msg.price)
    _check(path, halt & ((msg.size != 0) | (np.abs(msg.price) > 1)), "a trading halt (type 7) must have size 0 and "
           "price -1 (halt), 0 (quoting) or 1 (resume), as LOBSTER writes it", data[:, 3:5].astype(np.int64))
    _check(path, np.diff(msg.time_ns, prepend=msg.time_ns[0]) < 0, "time goes backwards (column 1)", data[:, 0])
    return msg


def read_orderbook(path: PathLike, levels: Optional[int] = None) -> OrderBook:
    """Read a LOBSTER order-book file (its L best levels; ``levels`` keeps only the first ones).

    Checked with file and line: a level is either a price > 0 with a size > 0 or LOBSTER's
    empty-level marker (9999999999 ask / -9999999999 bid, size 0); occupied levels come first and
    are strictly ordered away from the best price. Crossed rows (best bid >= best ask) are
    legal here: :func:`crossed_rows` counts them.
    """
    what = "ask price, ask size, bid price, bid size per level"
    data = _load(path, None, what, np.int64)
    if data.shape[1] % 4:
        raise ValueError(_diagnose(Path(path), None, what))
    file_levels = data.shape[1] // 4
    if levels is not None and levels > file_levels:
        raise ValueError(f"levels={levels} but {path} has only {file_levels} levels per side; "
                         f"pass levels <= {file_levels}")
    cube = data.reshape(len(data), file_levels, 4)
    arrays = [np.ascontiguousarray(cube[:, :, i]) for i in range(4)]  # ask price, ask size, bid price, bid size
    for side, col, empty in (("ask", 0, EMPTY_ASK_PRICE), ("bid", 2, EMPTY_BID_PRICE)):
        price, size = arrays[col], arrays[col + 1]
        marker = price == empty
        checks = ((marker & (size != 0), size, f"the empty-level marker {empty} at {side} level {{}} must have size 0"),
                  (~marker & (price <= 0), price, f"expected {side} price {{}} > 0 (dollars x 10000) or the empty-level "
                                                  f"marker {empty}"),
                  (~marker & (size <= 0), size, f"expected {side} size {{}} > 0 at a price, or the marker {empty} with "
                                                "size 0 for an empty level"))
        bad = np.logical_or.reduce([c[0] for c in checks]).any(1)
        if bad.any():  # the first bad line, its first failing check and level
            row = int(np.flatnonzero(bad)[0])
            mask, values, what = next(c for c in checks if c[0][row].any())
            lvl = int(np.flatnonzero(mask[row])[0])
            raise ValueError(f"{path}, line {row + 1}: {what.format(lvl + 1)}, got {values[row, lvl]}")
        sign = 1 if side == "ask" else -1
        _check(path, (marker[:, :-1] & ~marker[:, 1:]).any(1) | ((sign * np.diff(price, axis=1) <= 0)
               & ~marker[:, 1:]).any(1), f"expected {side} prices strictly {'rising' if sign > 0 else 'falling'} "
               "from level 1, empty levels last", price)
    if levels is None or levels == file_levels:
        return OrderBook(*arrays)
    return OrderBook(*(np.ascontiguousarray(a[:, :levels]) for a in arrays))


def crossed_rows(book: OrderBook) -> np.ndarray:
    """Rows whose best bid >= best ask (both sides occupied): real files carry a few."""
    both = (book.ask_size[:, 0] > 0) & (book.bid_size[:, 0] > 0)
    return both & (book.bid_price[:, 0] >= book.ask_price[:, 0])


def _format_times(time_ns: np.ndarray) -> list[str]:
    sec, frac = np.divmod(time_ns.astype(np.int64), 1_000_000_000)
    return [f"{s}.{f:09d}" for s, f in zip(sec.tolist(), frac.tolist())]


def write_messages(path: PathLike, messages: Messages) -> None:
    """Write a LOBSTER message file (times with 9 decimals, like LOBSTER)."""
    rows = zip(_format_times(messages.time_ns), messages.type.tolist(), messages.order_id.tolist(),
               messages.size.tolist(), messages.price.tolist(), messages.direction.tolist())
    with open(path, "w") as f:
        f.write("".join("%s,%d,%d,%d,%d,%d\n" % r for r in rows))


def write_orderbook(path: PathLike, book: OrderBook) -> None:
    """Write a LOBSTER order-book file (ask price, ask size, bid price, bid size per level)."""
    cube = np.stack([book.ask_price, book.ask_size, book.bid_price, book.bid_size], axis=2)
    flat = cube.reshape(len(book), 4 * book.levels).astype(np.int64)
    fmt = ",".join(["%d"] * flat.shape[1]) + "\n"
    with open(path, "w") as f:
        f.write("".join(fmt % tuple(r) for r in flat.tolist()))


class PriceLevels:
    """Aggregated size per price of one book side, prices kept sorted best-first (replay and simulator).

    :meth:`top` is cached until a change reaches the L best levels, so recording the book after
    every message costs little when most messages touch deeper levels or the other side.
    """

    def __init__(self, sign: int, levels: int) -> None:
        self.sign, self.levels = sign, levels  # sign +1: ask side (ascending), -1: bid side
        self.empty = EMPTY_ASK_PRICE if sign > 0 else EMPTY_BID_PRICE
        self.size: dict[int, int] = {}  # signed price (sign * price) -> shares
        self.keys: list[int] = []       # signed prices ascending = best first
        self._top: Optional[tuple[list[int], list[int]]] = None

    def add(self, price: int, size: int) -> int:
        """Add ``size`` (negative: remove) at ``price``; returns the new size (negative: refused)."""
        key = self.sign * price
        new = self.size.get(key, 0) + size
        if new < 0 or (new == 0 and key not in self.size):
            return new
        keys = self.keys
        if self._top is not None and (len(keys) <= self.levels or key <= keys[self.levels - 1]):
            self._top = None
        if key not in self.size:
            bisect.insort(keys, key)
        if new == 0:
            del self.size[key]
            keys.pop(bisect.bisect_left(keys, key))
        else:
            self.size[key] = new
        return new

    def best(self) -> Optional[int]:
        return self.sign * self.keys[0] if self.keys else None

    def top(self) -> tuple[list[int], list[int]]:
        """Prices and sizes of the L best levels, padded with LOBSTER's empty-level convention."""
        if self._top is None:
            keys = self.keys[:self.levels]
            pad = self.levels - len(keys)
            self._top = ([self.sign * k for k in keys] + [self.empty] * pad, [self.size[k] for k in keys] + [0] * pad)
        return self._top


def book_from_rows(rows: list[tuple], levels: int) -> OrderBook:
    """(ask prices, ask sizes, bid prices, bid sizes) lists per row -> :class:`OrderBook`."""
    cube = np.array(rows, dtype=np.int64).reshape(len(rows), 4, levels)
    return OrderBook(*(np.ascontiguousarray(cube[:, i]) for i in range(4)))
