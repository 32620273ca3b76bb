"""LOBSTER files as real ones come (issues 21 and 24): partial days, one day, an extra column,
mid-day replay with hidden depth, corrupted files, bad prices, crossed rows, sub-penny prices."""
from __future__ import annotations

import numpy as np
import pytest

from lightning_adv.datamodules.lobster import LOBSTERDataModule
from lightning_adv.orderbook.lobster import (EMPTY_ASK_PRICE, lobster_file_name, read_messages, read_orderbook,
                                             write_messages, write_orderbook)
from lightning_adv.orderbook.replay import replay
from lightning_adv.orderbook.simulator import SimulatorConfig, simulate_day

START, END = 34_200_000, 34_380_000  # a 180 s window (ms after midnight)
CFG = SimulatorConfig(days=1, end_ms=END, levels=6, warmup_seconds=20, seed=7)


@pytest.fixture(scope="module")
def day():
    """One simulated day with a complete message history and 6 levels."""
    return simulate_day(CFG, 0)


def _write(folder, msgs, book, date="2019-09-03", end_ms=END):
    write_messages(folder / lobster_file_name("SIM", date, START, end_ms, "message", book.levels), msgs)
    write_orderbook(folder / lobster_file_name("SIM", date, START, end_ms, "orderbook", book.levels), book)


def _dm(folder, **kw):
    args = dict(levels=3, snippet_seconds=10, horizon_seconds=5, window=(34200.0, 34380.0), batch_size=4,
                train_samples_per_epoch=8, val_samples=4, test_samples=4, seed=1)
    return LOBSTERDataModule(str(folder), **{**args, **kw})


def test_a_day_that_covers_part_of_the_window_is_refused_with_its_span(day, tmp_path):
    msgs, book = day
    cut = msgs.time_ns < (START + 50_000) * 10**6  # a file cut short after 50 s, named for 180 s
    _write(tmp_path, msgs[cut], book[cut])
    with pytest.raises(ValueError, match=r"SIM_2019-09-03_34200000_34380000_message_6.csv: its messages cover 34200.0\d+-"
                       r"3424\d.\d+ s \(\d\d.\d s\) of window=\[34200, 34380\] \(180 s\): 1[0-9]{4} of 18000 grid "
                       r"steps \(7\d.\d%\) would repeat a frozen book; pass window=\[34200, 3425\d\] or min_coverage"):
        _dm(tmp_path, time_split=[0.6, 0.2, 0.2]).setup("fit")
    # accepted on request, the frozen book then shows in the labels: the flat class swells
    with pytest.raises(ValueError, match=r"class shares down/flat/up \d+.\d%/[6-9]\d.\d%/\d+.\d% with threshold \+-"
                       r".* more than label_tolerance=0.1 from 33.3%/33.3%/33.3%: the SWA often does not move"):
        _dm(tmp_path, time_split=[0.9, 0.0, 0.1], min_coverage=0.0, min_snippets=1).setup("fit")
    dm = _dm(tmp_path, time_split=[0.9, 0.0, 0.1], min_coverage=0.0, min_snippets=1, label_tolerance=1.0)
    dm.setup("fit")
    assert dm.class_counts["train"][1] / sum(dm.class_counts["train"]) > 0.6


def test_one_day_needs_time_split_and_time_split_keeps_segments_apart(day, tmp_path):
    _write(tmp_path, *day)
    for kw in ({}, dict(train_days=0.8, test_days=0.2, val_days=0)):
        with pytest.raises(ValueError, match=r"holds one day \(SIM_2019-09-03_34200000_34380000_message_6.csv\) .*"
                                             r"split it by time instead: time_split=\[0.7, 0.15, 0.15\]"):
            _dm(tmp_path, **kw).setup("fit")
    dm = _dm(tmp_path, time_split=[0.6, 0.2, 0.2], min_snippets=2)
    dm.setup("fit")
    assert dm.days == {"train": ["2019-09-03 [34200, 34308) s"], "val": ["2019-09-03 [34308, 34344) s"],
                       "test": ["2019-09-03 [34344, 34380) s"]}
    train, test = dm.train_dataset, dm.test_dataset
    assert train.days[0].steps == 10800 and test.days[0].steps == 3600
    # every training label lies inside the training segment: last start + snippet + horizon <= its end
    assert train.starts[0][-1] + dm.steps + dm.horizon == 10800
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 1000, 3) and set(y.tolist()) <= {0, 1, 2}
    with pytest.raises(ValueError, match=r"only 7 disjoint snippets .* \(min_snippets=10\)"):
        _dm(tmp_path, time_split=[0.6, 0.2, 0.2]).setup("fit")
    with pytest.raises(ValueError, match=r"time_split=\[0.5, 0.5, 0.0\] is invalid"):
        _dm(tmp_path, time_split=[0.5, 0.5, 0.0])
    _write(tmp_path, *day, date="2019-09-04")
    with pytest.raises(ValueError, match="time_split=\\[0.6, 0.2, 0.2\\] splits one day but .* holds 2"):
        _dm(tmp_path, time_split=[0.6, 0.2, 0.2]).setup("fit")
    # two days and a validation day: fractions can never work, the error says what can
    with pytest.raises(ValueError, match="needs 20 days but .* has 2; pass val_days=0, train_days=1, test_days=1, or "
                                         "keep one day and pass time_split"):
        _dm(tmp_path).setup("fit")
    with pytest.raises(ValueError, match="val_days=1 leaves no training day of the 1; pass val_days=0, .* time_split"):
        _dm(tmp_path, train_days=0.5, test_days=0.5).setup("fit")


def test_a_trailing_mpid_column_is_accepted_and_nothing_else(tmp_path):
    rows = ["34200.1,1,1,100,100000,1", "34200.2,1,2,50,100100,-1", "34200.3,7,0,0,-1,-1"]
    plain, extra = tmp_path / "m6.csv", tmp_path / "m7.csv"
    plain.write_text("\n".join(rows) + "\n")
    extra.write_text("".join(f"{r},{tag}\n" for r, tag in zip(rows, ["null", "UBSS", ""])))
    a, b = read_messages(plain), read_messages(extra)
    assert all(np.array_equal(getattr(a, k), getattr(b, k)) for k in ("time_ns", "type", "order_id", "size", "price"))
    for bad, match in ((f"{rows[0]},null\n{rows[1]}\n", "line 2: expected 7 comma-separated values"),
                       (f"{rows[0]},UB-SS\n", "line 1: expected an MPID .* got 'UB-SS'"),
                       (f"{rows[0]},null,x\n", "line 1: expected 6 comma-separated values"),
                       (f"{rows[0]},1.5\n", "line 1: expected an MPID .* got '1.5'")):
        extra.write_text(bad)
        with pytest.raises(ValueError, match=match):
            read_messages(extra)


def _lobster_view(msgs, book, levels):
    """What an L-level LOBSTER file pair holds: the L best levels, and only the messages that touch
    them (a message beyond the L-th level of a full side is left out, as LOBSTER does)."""
    view = type(book)(*(np.ascontiguousarray(getattr(book, k)[:, :levels]) for k in
                        ("ask_price", "ask_size", "bid_price", "bid_size")))
    keep = np.ones(len(msgs), bool)
    for k in range(1, len(msgs)):
        ask = msgs.direction[k] < 0
        last_p = (view.ask_price if ask else view.bid_price)[k - 1, -1]
        full = (view.ask_size if ask else view.bid_size)[k - 1, -1] > 0
        beyond = msgs.price[k] > last_p if ask else msgs.price[k] < last_p
        keep[k] = not (full and beyond and msgs.type[k] in (1, 2, 3, 4))
    return msgs[keep], view[keep]


def test_mid_day_replay_of_an_l_level_file_has_hidden_depth_but_no_contradiction(day):
    msgs, book = day
    assert replay(msgs, book).equal == len(book)  # the complete 6-level history replays exactly
    m3, b3 = _lobster_view(msgs, book, 3)
    assert len(m3) < 0.9 * len(msgs)  # many messages touched hidden depth only
    for start in (0, len(m3) // 2):
        report = replay(m3, b3, start=start)
        assert report.rows == len(m3) - 1 - start and report.contradictions == 0
        assert report.hidden_depth > 0 and report.equal > report.hidden_depth
    # read as a complete history from an empty book, the same file does not add up
    assert replay(m3, b3).contradictions > 0


def test_a_corrupted_file_shows_contradictions(day):
    m3, b3 = _lobster_view(*day, 3)
    k = int(np.flatnonzero((m3.type == 1) & (np.abs(m3.price - b3.bid_price[:, 0]) == 0))[100])  # a visible bid
    removed = np.arange(len(m3)) != k
    report = replay(m3[removed], b3[removed], start=0)
    assert report.contradictions >= 1 and report.examples[0].startswith(f"line {k + 1}: bid side differs")
    altered = m3[:]
    altered.size = altered.size.copy()
    altered.size[k] += 7
    report = replay(altered, b3, start=0)
    assert report.contradictions >= 1 and report.examples[0].startswith(f"line {k + 1}: ")


SAMPLE = ["34200.1,1,1,100,100000,1", "34200.2,1,2,50,100150,-1", "34200.3,1,3,30,99925,1", "34200.4,7,0,0,-1,-1"]
BOOK = ["9999999999,0,100000,100", "100150,50,100000,100", "100150,50,100000,100", "100150,50,100000,100"]


BAD_MESSAGES = [(1, "34200.1,1,1,100,-100000,1", r"m.csv, line 1: expected a price > 0 .* got -100000"),
                (3, "34200.3,1,3,0,99925,1", r"line 3: expected a size > 0 \(column 4\), got 0"),
                (2, "34200.2,1,2,50,100150,0", r"line 2: expected direction -1 or 1 .* got 0"),
                (4, "34200.4,7,0,0,-5,-1", r"line 4: a trading halt \(type 7\) must have size 0 and price")]
BAD_BOOK = [(2, "-100150,50,100000,100", r"o.csv, line 2: expected ask price 1 > 0 .* got -100150"),
            (3, "100150,50,-100000,100", r"line 3: expected bid price 1 > 0 .* got -100000"),
            (2, "100150,-50,100000,100", r"line 2: expected ask size 1 > 0 .* got -50"),
            (1, "9999999999,5,100000,100", r"line 1: the empty-level marker 9999999999 .* size 0")]


def test_prices_sizes_directions_types_are_checked_with_file_and_line(tmp_path):
    m, o = tmp_path / "m.csv", tmp_path / "o.csv"
    m.write_text("\n".join(SAMPLE) + "\n")
    o.write_text("\n".join(BOOK) + "\n")
    msgs = read_messages(m)  # sub-penny prices (100150, 99925) and a halt's -1 are fine
    assert msgs.price.tolist() == [100000, 100150, 99925, -1]
    assert read_orderbook(o).ask_price[:, 0].tolist() == [EMPTY_ASK_PRICE, 100150, 100150, 100150]
    for path, good, reader, cases in ((m, SAMPLE, read_messages, BAD_MESSAGES), (o, BOOK, read_orderbook, BAD_BOOK)):
        for line, bad, match in cases:
            path.write_text("\n".join(good[:line - 1] + [bad] + good[line:]) + "\n")
            with pytest.raises(ValueError, match=match):
                reader(path)
    o.write_text("100150,50,100000,100,100100,5,99000,5\n")
    with pytest.raises(ValueError, match=r"line 1: expected ask prices strictly rising from level 1"):
        read_orderbook(o)


def test_crossed_rows_are_counted_in_one_line_and_dropped_on_request(day, tmp_path):
    msgs, book = day
    book = book[:]
    book.bid_price = book.bid_price.copy()
    rows = np.flatnonzero(book.ask_size[:, 0] > 0)[500:700]
    book.bid_price[rows, 0] = book.ask_price[rows, 0]  # best bid == best ask: crossed
    _write(tmp_path, msgs, book)
    with pytest.warns(UserWarning, match=rf"orderbook_6.csv: 200 of {len(book)} rows are crossed \(best bid >= best ask\), "
                                         rf"first at line {rows[0] + 1}; kept; pass drop_crossed=true"):
        kept = _dm(tmp_path, time_split=[0.6, 0.2, 0.2], min_snippets=2)
        kept.setup("fit")
    with pytest.warns(UserWarning, match="200 of .* rows are crossed .* dropped with their messages"):
        dropped = _dm(tmp_path, time_split=[0.6, 0.2, 0.2], min_snippets=2, drop_crossed=True)
        dropped.setup("fit")
    for dm, crossed in ((kept, True), (dropped, False)):
        g = dm.train_dataset.days[0]
        assert bool((g.bid_price[:, 0] >= g.ask_price[:, 0]).any()) is crossed
