"""``LOBSTERDataModule``: labelled order-book snippets from LOBSTER files (thesis 3.3.1-3.3.2).

Batches are ``(BookSnippet, label)`` with ``BookSnippet`` of shape (B, T, L) (T = snippet_seconds /
grid_seconds, 6000 in the thesis) and labels 0 down / 1 flat / 2 up (see
``lightning_adv.orderbook.snippets``). Days are split in time order: the first ``train_days``
train (the last ``val_days`` of them validate: the thesis has no validation set, and model
selection on test days would leak), the last ``test_days`` test. Training draws random snippets
(the thesis resamples every SGD step): an epoch is ``train_samples_per_epoch`` draws, and draw
``i`` of epoch ``e`` is a function of ``(seed, e, i)`` only, so DDP ranks and resumed runs see the
same snippets. Validation and test use fixed seeded sets (thesis: 10,000 test snippets).
A single day is split by time instead (``time_split``). ``setup`` checks every file before training
(values, crossed rows, coverage of the window, snippets per day, class shares) with one line each:
docs/orderbook-data.md lists them.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterator, Optional, Union

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from lightning_adv.orderbook.book import BookSnippet, collate_snippets
from lightning.pytorch.utilities import rank_zero_warn

from lightning_adv.orderbook.lobster import (LobsterDay, Messages, OrderBook, crossed_rows, find_lobster_days,
                                             read_messages, read_orderbook)
from lightning_adv.validation import check_int, check_real
from lightning_adv.orderbook.simulator import SimulatorConfig, write_simulated_days
from lightning_adv.orderbook.snippets import (DayGrid, build_day_grid, check_coverage, check_label_balance,
                                              check_snippet_count, gather_snippets, label_changes, labels_from_changes,
                                              pooled_threshold)

__all__ = ["LOBSTERDataModule", "SnippetDataset", "EpochKeySampler", "collate_labelled_snippets", "read_day"]


def collate_labelled_snippets(batch: Union[tuple[BookSnippet, torch.Tensor], list[tuple[BookSnippet, int]]]
                              ) -> tuple[BookSnippet, torch.Tensor]:
    """``(BookSnippet (B, T, L), labels (B,))`` from a list of items, or passed through when the
    dataset's ``__getitems__`` already built the batch (one copy instead of two)."""
    if isinstance(batch, tuple) and isinstance(batch[0], BookSnippet):
        return batch
    return collate_snippets([b[0] for b in batch]), torch.tensor([b[1] for b in batch], dtype=torch.long)


class SnippetDataset(Dataset):
    """Labelled snippets of ``days``, each a uniform draw over all (day, start) positions seeded by
    ``(seed, stream, key)``: drawn anew per key (``fixed=False``, training: keys come from
    :class:`EpochKeySampler`) or once for keys ``0..length-1`` (evaluation sets).
    Item: ``(BookSnippet with B=1, label)``."""

    def __init__(self, days: list[DayGrid], steps: int, horizon: int, levels: int, theta: float,
                 length: int, seed: int, stream: int, fixed: bool) -> None:
        self.days, self.steps, self.horizon, self.levels, self.theta = days, steps, horizon, levels, theta
        self.length, self.seed, self.stream = length, seed, stream
        self.starts, self.changes = zip(*(label_changes(d, steps, horizon) for d in days))
        self.cum = np.cumsum([0] + [len(s) for s in self.starts])
        self.fixed = [self._draw(i) for i in range(length)] if fixed else None

    def _draw(self, key: int) -> tuple[int, int]:
        r = int(np.random.default_rng([self.seed, self.stream, key]).integers(self.cum[-1]))
        day = int(np.searchsorted(self.cum, r, side="right")) - 1
        return day, r - int(self.cum[day])

    def __len__(self) -> int:
        return self.length

    def _item(self, key: int) -> tuple[int, int]:
        return self.fixed[key] if self.fixed is not None else self._draw(int(key))

    def __getitem__(self, key: int) -> tuple[BookSnippet, int]:
        x, y = self.__getitems__([key])
        return x, int(y[0])

    def __getitems__(self, keys: list[int]) -> tuple[BookSnippet, torch.Tensor]:
        """A whole batch at once (the DataLoader calls this with a batch of keys)."""
        items = [self._item(k) for k in keys]
        x = gather_snippets(self.days, [(d, int(self.starts[d][p])) for d, p in items], self.steps, self.levels)
        changes = np.array([self.changes[d][p] for d, p in items])
        return x, torch.from_numpy(labels_from_changes(changes, self.theta))

    def labels(self) -> np.ndarray:
        """Labels of the fixed set (class counts of validation/test)."""
        items = self.fixed or []
        return np.array([labels_from_changes(self.changes[d][p:p + 1], self.theta)[0] for d, p in items], np.int64)


class EpochKeySampler(Sampler[int]):
    """Yields keys ``epoch * n + i`` (i < n): Lightning calls :meth:`set_epoch` at every epoch (also
    through its DDP sampler wrapper, which then shards the keys), so each epoch draws new snippets."""

    def __init__(self, num_samples: int) -> None:
        self.num_samples, self.epoch = num_samples, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.epoch * self.num_samples, (self.epoch + 1) * self.num_samples))

    def __len__(self) -> int:
        return self.num_samples


def read_day(day: LobsterDay, levels: int, drop_crossed: bool = False) -> tuple[Messages, OrderBook]:
    """Read one day's two files (row counts must match); crossed book rows (best bid >= best ask)
    are counted in one warning line and, with ``drop_crossed``, dropped with their messages."""
    messages = read_messages(day.message_path)
    book = read_orderbook(day.orderbook_path, levels)
    if len(messages) != len(book):
        short = day.message_path if len(messages) < len(book) else day.orderbook_path
        raise ValueError(f"{day.message_path.name} has {len(messages)} rows but {day.orderbook_path.name} has "
                         f"{len(book)}: row k of the order book must be the state after message k "
                         f"(first unmatched line {min(len(messages), len(book)) + 1} of the longer file; {short} is short)")
    crossed = crossed_rows(book)
    if crossed.any():
        n, first = int(crossed.sum()), int(np.flatnonzero(crossed)[0]) + 1
        action = "dropped with their messages" if drop_crossed else "kept; pass drop_crossed=true to drop them"
        rank_zero_warn(f"{day.orderbook_path}: {n} of {len(book)} rows are crossed (best bid >= best ask), first at "
                       f"line {first}; {action}")
        if drop_crossed:
            keep = ~crossed
            messages, book = messages[keep], book[keep]
    return messages, book


class LOBSTERDataModule(pl.LightningDataModule):
    """Snippets of LOBSTER order books with down/flat/up labels (see the module doc).

    Args:
        data_dir: folder of ``TICKER_DATE_START_END_{message|orderbook}_LEVEL.csv`` files.
        ticker: which ticker to use (``None``: the only one in ``data_dir``).
        levels: price levels per side L (<= the files' level count; thesis 10).
        snippet_seconds, horizon_seconds, grid_seconds: input length (60 s), label horizon after
            the snippet (10 s) and sampling grid (0.01 s) of the thesis.
        window: (start, end) seconds after midnight sampled each day (first hour: 9:30-10:30).
        train_days, test_days: the first / last days (ints), or fractions of the days (floats).
        val_days: the last training days held out for validation (0: none).
        time_split: ``(train, val, test)`` fractions of the window of the *one* day in ``data_dir``,
            in time order (e.g. ``[0.7, 0.15, 0.15]``), instead of whole days: for a single sample day.
        flat_fraction: share of training positions in the flat class (thesis 1/3).
        min_coverage: least share of a day's window its messages must span (else the grid repeats a
            frozen book: a file cut short); 0 accepts any file.
        label_tolerance: largest gap between a training class share and its target
            ((1 - flat_fraction) / 2, flat_fraction, (1 - flat_fraction) / 2); 1 accepts any.
        min_snippets: least number of disjoint snippet + horizon spans per day (or time segment).
        drop_crossed: drop crossed book rows (best bid >= best ask) and their messages, as LOBFrame
            does; they are counted in one warning line either way.
        batch_size, eval_batch_size: training / evaluation batch sizes.
        train_samples_per_epoch: random snippet draws per training epoch.
        val_samples, test_samples: sizes of the fixed seeded evaluation sets (thesis 10,000).
        seed: seed of all draws (independent of the global seed).
        simulate: ``None`` reads your files; a dict of ``SimulatorConfig`` fields (``{}`` for the
            defaults) writes simulated days into ``data_dir`` first when they are absent.
        num_workers: dataloader workers.
    """

    num_classes = 3

    def __init__(self, data_dir: str = "data/lobster", ticker: Optional[str] = None, levels: int = 10,
                 snippet_seconds: float = 60.0, horizon_seconds: float = 10.0, grid_seconds: float = 0.01,
                 window: tuple[float, float] = (34200.0, 37800.0), train_days: Union[int, float] = 16,
                 test_days: Union[int, float] = 4, val_days: int = 1,
                 time_split: Optional[tuple[float, float, float]] = None, flat_fraction: float = 1 / 3,
                 min_coverage: float = 0.9, label_tolerance: float = 0.1, min_snippets: int = 10,
                 drop_crossed: bool = False,
                 batch_size: int = 256, eval_batch_size: Optional[int] = None, train_samples_per_epoch: int = 25600,
                 val_samples: int = 2000, test_samples: int = 10000, seed: int = 0,
                 simulate: Optional[dict[str, Any]] = None, num_workers: int = 0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self._check_args(levels, snippet_seconds, horizon_seconds, grid_seconds, window, flat_fraction,
                         train_days, test_days, val_days, batch_size, train_samples_per_epoch, val_samples, test_samples)
        self._check_checks(time_split, min_coverage, label_tolerance, min_snippets)
        self.data_dir, self.ticker, self.levels = Path(data_dir), ticker, levels
        self.grid_ns = int(round(grid_seconds * 1e9))
        self.steps = int(round(snippet_seconds / grid_seconds))
        self.horizon = int(round(horizon_seconds / grid_seconds))
        self.start_ns, self.end_ns = (int(round(w * 1e9)) for w in window)
        self.simulator = SimulatorConfig.from_dict(simulate) if simulate is not None else None
        if self.simulator is not None and self.simulator.levels < levels:
            raise ValueError(f"levels={levels} but simulate.levels={self.simulator.levels}: simulate at least {levels} levels")
        self.thresholds: Optional[tuple[float, float]] = None
        self.class_counts: dict[str, list[int]] = {}
        self.days: dict[str, list[str]] = {}
        self.train_dataset: Optional[SnippetDataset] = None
        self.val_dataset: Optional[SnippetDataset] = None
        self.test_dataset: Optional[SnippetDataset] = None

    @staticmethod
    def _check_args(levels: int, snippet: float, horizon: float, grid: float, window: tuple, flat: float,
                    train_days: Union[int, float], test_days: Union[int, float], val_days: int, *counts: int) -> None:
        def fail(name: str, value: Any, fix: str) -> None:
            raise ValueError(f"{name}={value!r} is invalid: {fix}")
        check_int("levels", levels, 1, "the thesis uses 10")
        for name, v in (("snippet_seconds", snippet), ("horizon_seconds", horizon), ("grid_seconds", grid)):
            check_real(name, v, positive=True, hint="a number of seconds")
            if name != "grid_seconds" and abs(v / grid - round(v / grid)) > 1e-6:
                fail(name, v, f"expected a whole multiple of grid_seconds={grid}")
        if len(window) != 2 or not window[0] < window[1]:
            fail("window", window, "expected (start, end) seconds after midnight with start < end, e.g. (34200, 37800)")
        if snippet + horizon > window[1] - window[0]:
            fail("snippet_seconds", snippet, f"the snippet plus horizon_seconds={horizon} is longer than the "
                 f"trading window {window} ({window[1] - window[0]} s); shorten it or widen the window")
        check_real("flat_fraction", flat, positive=True, maximum=1.0, below_max=True, hint="the thesis uses 1/3")
        for name, v in (("train_days", train_days), ("test_days", test_days)):
            days = "a number of days >= 1 (int) or a fraction of the days in (0, 1) (float)"
            if isinstance(v, float):
                check_real(name, v, positive=True, maximum=1.0, below_max=True, hint=days)
            else:
                check_int(name, v, 1, days)
        check_int("val_days", val_days, 0)
        for name, v in zip(("batch_size", "train_samples_per_epoch", "val_samples", "test_samples"), counts):
            check_int(name, v, 1)

    @staticmethod
    def _check_checks(time_split: Optional[tuple], min_coverage: float, label_tolerance: float, min_snippets: int) -> None:
        if time_split is not None:
            for i, v in enumerate(time_split):
                check_real(f"time_split[{i}]", v, minimum=0.0, maximum=1.0)
            if not (len(time_split) == 3 and time_split[0] > 0 and time_split[2] > 0 and sum(time_split) <= 1 + 1e-9):
                raise ValueError(f"time_split={time_split!r} is invalid: expected (train, val, test) fractions of the "
                                 "window with train > 0, test > 0, val >= 0 and a sum <= 1, e.g. [0.7, 0.15, 0.15]")
        for name, v in (("min_coverage", min_coverage), ("label_tolerance", label_tolerance)):
            check_real(name, v, minimum=0.0, maximum=1.0, hint="a fraction")
        check_int("min_snippets", min_snippets, 1)

    def prepare_data(self) -> None:
        """Write the simulated days when ``simulate`` is set (seeded; existing days are kept)."""
        if self.simulator is not None:
            write_simulated_days(self.data_dir, self.simulator)

    def _split(self, found: list[LobsterDay]) -> tuple[int, int]:
        n, hp = len(found), self.hparams
        if n == 1:
            raise ValueError(f"data_dir={str(self.data_dir)!r} holds one day ({found[0].message_path.name}) but train_days "
                             f"and test_days need separate days; split it by time instead: time_split=[0.7, 0.15, 0.15]")

        def count(v: Union[int, float]) -> int:
            return v if isinstance(v, int) else max(1, int(math.floor(v * n)))
        n_train, n_test = count(hp.train_days), count(hp.test_days)
        fits = n >= 2 + hp.val_days  # fractions can work: one test day, val_days + 1 training days
        if n_train + n_test > n:
            fix = ("pass fractions, e.g. train_days=0.8, test_days=0.2" if fits else
                   "pass val_days=0, train_days=1, test_days=1, or keep one day and pass time_split=[0.7, 0.15, 0.15]")
            raise ValueError(f"train_days={hp.train_days} + test_days={hp.test_days} needs {n_train + n_test} days but "
                             f"{self.data_dir} has {n}; {fix}")
        if hp.val_days >= n_train:
            raise ValueError(f"val_days={hp.val_days} leaves no training day of the {n_train}; pass val_days=0, use "
                             "more training days, or split one day by time with time_split=[0.7, 0.15, 0.15]")
        return n_train, n_test

    def _grid(self, day: LobsterDay, label: str, messages: Messages, book: OrderBook, start_ns: int, end_ns: int) -> DayGrid:
        grid = build_day_grid(label, messages, book, start_ns, end_ns, self.grid_ns)
        check_snippet_count(day.message_path.name, grid, self.steps, self.horizon, self.hparams.min_snippets)
        return grid

    def _read(self, day: LobsterDay) -> tuple[Messages, OrderBook]:
        if day.levels < self.levels:
            raise ValueError(f"levels={self.levels} but {day.orderbook_path.name} has {day.levels} levels; "
                             f"pass levels <= {day.levels}")
        if self.start_ns < day.start_ms * 1_000_000 or self.end_ns > day.end_ms * 1_000_000:
            raise ValueError(f"window={tuple(self.hparams.window)} s is outside {day.message_path.name}'s "
                             f"window ({day.start_ms / 1000}, {day.end_ms / 1000}) s; pass a window inside it")
        messages, book = read_day(day, self.levels, self.hparams.drop_crossed)
        check_coverage(day.message_path.name, messages.time_ns, self.start_ns, self.end_ns, self.grid_ns,
                       self.hparams.min_coverage)
        return messages, book

    def _by_days(self, found: list[LobsterDay]) -> dict[str, list[DayGrid]]:
        n_train, n_test = self._split(found)
        n_fit = n_train - self.hparams.val_days
        parts = {"train": found[:n_fit], "val": found[n_fit:n_train], "test": found[len(found) - n_test:]}
        self.days = {k: [d.date for d in v] for k, v in parts.items()}
        return {k: [self._grid(d, d.date, *self._read(d), self.start_ns, self.end_ns) for d in v]
                for k, v in parts.items() if v}

    def _by_time(self, found: list[LobsterDay]) -> dict[str, list[DayGrid]]:
        if len(found) != 1:
            raise ValueError(f"time_split={list(self.hparams.time_split)} splits one day but {self.data_dir} holds "
                             f"{len(found)}; pass time_split=null and train_days/test_days, or keep one day")
        day, steps = found[0], (self.end_ns - self.start_ns) // self.grid_ns
        messages, book = self._read(day)
        bounds = self.start_ns + self.grid_ns * np.rint(steps * np.cumsum([0, *self.hparams.time_split])).astype(np.int64)
        grids, self.days = {}, {}
        for name, lo, hi in zip(("train", "val", "test"), bounds[:-1].tolist(), bounds[1:].tolist()):
            if hi > lo:
                label = f"{day.date} [{lo / 1e9:g}, {hi / 1e9:g}) s"
                grids[name], self.days[name] = [self._grid(day, label, messages, book, lo, hi)], [label]
        return grids

    def setup(self, stage: Optional[str] = None) -> None:
        """Read the days, check them, sample them on the grid, choose the thresholds on the training days."""
        if self.train_dataset is not None:
            return
        found = find_lobster_days(self.data_dir, self.ticker)
        grids = self._by_time(found) if self.hparams.time_split is not None else self._by_days(found)
        hp = self.hparams
        theta, counts = pooled_threshold(grids["train"], self.steps, self.horizon, hp.flat_fraction)
        names = [d.message_path.name for d in found if d.date in {g.date.split()[0] for g in grids["train"]}]
        where = ", ".join(names) if len(names) <= 2 else f"the {len(names)} training days in {self.data_dir}"
        check_label_balance(where, counts, theta, hp.flat_fraction, hp.label_tolerance)
        self.thresholds = (-theta, theta)
        self.class_counts = {"train": counts.tolist()}
        args = (self.steps, self.horizon, self.levels, theta)
        self.train_dataset = SnippetDataset(grids["train"], *args, hp.train_samples_per_epoch, hp.seed, 0, fixed=False)
        for split, n, offset in (("val", hp.val_samples, 1), ("test", hp.test_samples, 2)):
            if split in grids:
                ds = SnippetDataset(grids[split], *args, n, hp.seed, offset, fixed=True)
                setattr(self, f"{split}_dataset", ds)
                self.class_counts[split] = np.bincount(ds.labels(), minlength=3).tolist()

    def _loader(self, dataset: Dataset, batch_size: int, sampler: Optional[Sampler] = None) -> DataLoader:
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, shuffle=False,
                          num_workers=self.hparams.num_workers, collate_fn=collate_labelled_snippets,
                          persistent_workers=self.hparams.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        assert self.train_dataset is not None, "LOBSTERDataModule.setup() runs first"
        return self._loader(self.train_dataset, self.hparams.batch_size, EpochKeySampler(len(self.train_dataset)))

    def val_dataloader(self) -> Union[DataLoader, list]:
        if self.val_dataset is None:
            return []
        return self._loader(self.val_dataset, self.hparams.eval_batch_size or self.hparams.batch_size)

    def test_dataloader(self) -> DataLoader:
        assert self.test_dataset is not None, "LOBSTERDataModule.setup() runs first"
        return self._loader(self.test_dataset, self.hparams.eval_batch_size or self.hparams.batch_size)
