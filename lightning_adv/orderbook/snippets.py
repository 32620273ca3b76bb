"""From LOBSTER days to labelled snippets on the thesis's time grid (thesis 3.3.1).

A day is sampled on a regular grid (0.01 s): the book at grid time ``g`` is the book after the
last message with time <= g (LOBSTER's order-book row k is the state after message k). A
:class:`DayGrid` stores, per grid step, the index of that row into the *distinct* rows the grid
uses (at most min(#messages, #steps) rows: a day of the first hour is 360,000 steps), so a
snippet is a gather, not a replay. A snippet starting at step ``s`` holds steps s..s+T-1; its
label is the SWA change from the last snippet step to ``horizon`` steps later, classified as
down / flat / up with symmetric thresholds +-theta chosen on the training days so that the
flat class holds ``flat_fraction`` of all training positions (:func:`symmetric_threshold`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from .book import BookSnippet
from .lobster import PRICE_SCALE, Messages, OrderBook

__all__ = ["DayGrid", "build_day_grid", "check_coverage", "check_label_balance", "check_snippet_count", "gather_snippets",
           "grid_rows", "label_changes", "labels_from_changes",
           "pooled_threshold", "symmetric_threshold", "snippet_at", "swa_numpy"]


@dataclass
class DayGrid:
    """One day sampled on the grid (see the module doc). Steps before the first message have
    ``index`` -1 and SWA NaN; executions are the visible and hidden ones (types 4 and 5) with their grid step."""

    date: str
    index: np.ndarray       # (G,) int32 row of each grid step in the arrays below, -1 = no book yet
    ask_price: np.ndarray   # (U, L) float64 dollars, NaN = empty level (the BookSnippet convention)
    ask_size: np.ndarray    # (U, L) float32 shares (exact below 2**24 shares per level)
    bid_price: np.ndarray   # (U, L) float64 dollars
    bid_size: np.ndarray    # (U, L) float32
    swa: np.ndarray         # (G,) float64 dollars
    exec_step: np.ndarray   # (E,) int64 grid step t with time in (g_{t-1}, g_t], ascending
    exec_price: np.ndarray  # (E,) float64 dollars
    exec_side: np.ndarray   # (E,) int8 +1 ask side (sell order) executed, -1 bid side

    @property
    def steps(self) -> int:
        return int(self.index.shape[0])

    @property
    def first_step(self) -> int:
        """The first grid step with a book (the index is non-decreasing)."""
        return int(np.searchsorted(self.index, 0))


def grid_rows(time_ns: np.ndarray, grid_ns: np.ndarray) -> np.ndarray:
    """Row (message index) of the book at each grid time: the last message with time <= g, -1 if none."""
    return np.searchsorted(time_ns, grid_ns, side="right").astype(np.int64) - 1


def swa_numpy(ask_price: np.ndarray, ask_size: np.ndarray, bid_price: np.ndarray, bid_size: np.ndarray) -> np.ndarray:
    """Size-weighted average price (dollars) of each row over all L+L levels (as ``book.swa``);
    empty levels have size 0 and drop out; a row without shares gives NaN."""
    num = (ask_price * ask_size.astype(np.float64)).sum(-1) + (bid_price * bid_size.astype(np.float64)).sum(-1)
    den = ask_size.sum(-1, dtype=np.float64) + bid_size.sum(-1, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return num / den / PRICE_SCALE


def build_day_grid(date: str, messages: Messages, book: OrderBook, start_ns: int, end_ns: int,
                   grid_ns: int) -> DayGrid:
    """Sample one day (``book`` row k = state after message k) on ``start + j * grid`` for
    ``j < (end - start) / grid``; keeps the distinct rows the grid uses."""
    grid = start_ns + grid_ns * np.arange((end_ns - start_ns) // grid_ns, dtype=np.int64)
    rows = grid_rows(messages.time_ns, grid)
    used, index = np.unique(rows[rows >= 0], return_inverse=True)
    full = np.full(len(grid), -1, np.int32)
    full[rows >= 0] = index
    sub = book[used]
    row_swa = swa_numpy(sub.ask_price, sub.ask_size, sub.bid_price, sub.bid_size)
    swa = np.where(full >= 0, row_swa[np.maximum(full, 0)] if len(used) else np.nan, np.nan)
    # executions at a price (thesis 3.4.2): visible (4) and hidden (5) ones both execute resting attack orders
    execs = np.isin(messages.type, (4, 5)) & (messages.time_ns > start_ns - grid_ns)
    steps = np.searchsorted(grid, messages.time_ns[execs], side="left")
    keep = steps < len(grid)

    def dollars(price: np.ndarray, size: np.ndarray) -> np.ndarray:
        return np.where(size > 0, price / PRICE_SCALE, np.nan)

    return DayGrid(date, full, dollars(sub.ask_price, sub.ask_size), sub.ask_size.astype(np.float32),
                   dollars(sub.bid_price, sub.bid_size), sub.bid_size.astype(np.float32), swa,
                   steps[keep].astype(np.int64), messages.price[execs][keep] / PRICE_SCALE,
                   (-messages.direction[execs][keep]).astype(np.int8))


def label_changes(day: DayGrid, steps: int, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Valid snippet starts of a day and their SWA change: start ``s`` needs a book at ``s`` and the
    label step ``s + steps - 1 + horizon`` inside the day. Returns (starts, change in dollars)."""
    first, last = day.first_step, day.steps - steps - horizon
    starts = np.arange(first, last + 1, dtype=np.int64)
    end = starts + steps - 1
    return starts, day.swa[end + horizon] - day.swa[end]


def symmetric_threshold(changes: np.ndarray, flat_fraction: float) -> float:
    """theta such that ``|change| <= theta`` (the flat class) holds ``flat_fraction`` of ``changes``
    (the empirical quantile of |change|); raises ``ValueError`` if a class would be empty."""
    if not 0.0 < flat_fraction < 1.0:
        raise ValueError(f"flat_fraction={flat_fraction!r} must be in (0, 1); the thesis uses 1/3")
    changes = changes[np.isfinite(changes)]
    if changes.size == 0:
        raise ValueError("no labelled snippet positions on the training days: the days are shorter than "
                         "snippet_seconds + horizon_seconds")
    theta = float(np.quantile(np.abs(changes), flat_fraction))
    counts = np.bincount(labels_from_changes(changes, theta), minlength=3)
    if (counts == 0).any():
        raise ValueError(f"the label thresholds +-{theta:.6g} leave a class empty (down/flat/up counts "
                         f"{counts.tolist()} on the training days): the SWA barely moves; use other days, "
                         f"a longer horizon_seconds or another flat_fraction (now {flat_fraction})")
    return theta


def labels_from_changes(changes: np.ndarray, theta: float) -> np.ndarray:
    """0 = down (change < -theta), 1 = flat, 2 = up (change > theta)."""
    return np.where(changes < -theta, 0, np.where(changes > theta, 2, 1)).astype(np.int64)


def gather_snippets(days: Sequence[DayGrid], items: Sequence[tuple[int, int]], steps: int, levels: int) -> BookSnippet:
    """The batched :class:`BookSnippet` of ``(day, start)`` items, grid steps start..start+steps-1
    each; one copy per array straight into the batch (executions padded with -1 / NaN / 0)."""
    n = len(items)
    out = {k: np.empty((n, steps, levels), dt) for k, dt in
           (("ask_price", np.float64), ("ask_size", np.float32), ("bid_price", np.float64), ("bid_size", np.float32))}
    spans = []
    for i, (d, start) in enumerate(items):
        day = days[d]
        rows = day.index[start:start + steps]
        if rows.shape[0] != steps or start < 0 or rows[0] < 0:
            raise IndexError(f"snippet at step {start} of {day.date} leaves the day or starts before its first message")
        for name, arr in out.items():
            src = getattr(day, name)
            np.take(src if src.shape[1] == levels else src[:, :levels], rows, axis=0, out=arr[i])
        spans.append((day, start, *np.searchsorted(day.exec_step, [start, start + steps])))
    width = max([hi - lo for _, _, lo, hi in spans] + [0])
    ex_step, ex_price, ex_side = np.full((n, width), -1, np.int64), np.full((n, width), np.nan), np.zeros((n, width), np.int8)
    for i, (day, start, lo, hi) in enumerate(spans):
        ex_step[i, :hi - lo] = day.exec_step[lo:hi] - start
        ex_price[i, :hi - lo] = day.exec_price[lo:hi]
        ex_side[i, :hi - lo] = day.exec_side[lo:hi]
    tensors = {k: torch.from_numpy(v) for k, v in out.items()}
    return BookSnippet(**tensors, exec_step=torch.from_numpy(ex_step), exec_price=torch.from_numpy(ex_price),
                       exec_side=torch.from_numpy(ex_side))


def snippet_at(day: DayGrid, start: int, steps: int, levels: int) -> BookSnippet:
    """The B=1 :class:`BookSnippet` of grid steps start..start+steps-1 (prices in dollars, NaN = empty)."""
    return gather_snippets([day], [(0, start)], steps, levels)


def pooled_threshold(days: Sequence[DayGrid], steps: int, horizon: int, flat_fraction: float) -> tuple[float, np.ndarray]:
    """The threshold over all positions of ``days`` and the class counts it gives there."""
    changes = np.concatenate([label_changes(d, steps, horizon)[1] for d in days])
    theta = symmetric_threshold(changes, flat_fraction)
    return theta, np.bincount(labels_from_changes(changes[np.isfinite(changes)], theta), minlength=3)


# --- checks before training (one line each: the file, the value, the fix) ---

def check_coverage(name: str, time_ns: np.ndarray, start_ns: int, end_ns: int, grid_ns: int,
                   min_coverage: float) -> None:
    """The messages must span at least ``min_coverage`` of the window's grid steps: outside
    [first message, last message] the grid repeats one frozen book (a file cut short, a quiet
    ticker, a window beyond the data)."""
    steps = (end_ns - start_ns) // grid_ns
    inside = time_ns[(time_ns >= start_ns) & (time_ns < end_ns)]
    first, last = (int(inside[0]), int(inside[-1])) if inside.size else (end_ns, end_ns)
    live = (last - first) // grid_ns + 1 if inside.size else 0
    if live >= min_coverage * steps:
        return
    frozen = steps - live
    span = f"{first / 1e9:.3f}-{last / 1e9:.3f} s ({(last - first) / 1e9:.1f} s)" if inside.size else "nothing"
    fit = f"window=[{first // 10**9}, {-(-last // 10**9)}]" if inside.size else "a window inside the file's messages"
    raise ValueError(f"{name}: its messages cover {span} of window=[{start_ns / 1e9:g}, {end_ns / 1e9:g}] "
                     f"({(end_ns - start_ns) / 1e9:g} s): {frozen} of {steps} grid steps ({frozen / steps:.1%}) "
                     f"would repeat a frozen book; pass {fit} or min_coverage below {live / steps:.3f} to accept it")


def check_snippet_count(name: str, day: DayGrid, steps: int, horizon: int, min_snippets: int) -> None:
    """A day (or time segment) must hold ``min_snippets`` disjoint snippet + horizon spans."""
    count = max(0, day.steps - day.first_step) // (steps + horizon)
    if count < min_snippets:
        raise ValueError(f"{name} ({day.date}): only {count} disjoint snippets of snippet_seconds + horizon_seconds "
                         f"fit its {day.steps - day.first_step} grid steps with a book (min_snippets={min_snippets}); "
                         "widen the window, shorten snippet_seconds or horizon_seconds, or lower min_snippets")


def check_label_balance(where: str, counts: np.ndarray, theta: float, flat_fraction: float, tolerance: float) -> None:
    """Class shares on the training positions must lie within ``tolerance`` of the targets
    (down, flat, up) = ((1 - f) / 2, f, (1 - f) / 2) with f = ``flat_fraction`` (thesis: thirds)."""
    shares = counts / counts.sum()
    target = np.array([(1 - flat_fraction) / 2, flat_fraction, (1 - flat_fraction) / 2])
    if np.abs(shares - target).max() <= tolerance:
        return
    if shares[1] - target[1] > tolerance:
        cause = "the SWA often does not move over the horizon (a frozen or quiet book); use a longer horizon_seconds"
    else:
        cause = "the days trend one way; use more training days"
    fmt = "/".join(f"{s:.1%}" for s in shares)
    raise ValueError(f"{where}: class shares down/flat/up {fmt} with threshold +-{theta:.6g} $ are more than "
                     f"label_tolerance={tolerance} from {'/'.join(f'{t:.1%}' for t in target)}: {cause}, "
                     "or raise label_tolerance to accept them")
