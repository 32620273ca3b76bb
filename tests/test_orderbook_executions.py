"""Executions as the thesis defines them (visible and hidden) and table 3.2's success means (chapter 3)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lightning_adv.attacks import AttackSuite
from lightning_adv.orderbook import CapitalBoundedAttack, LinearValuation, build_day_grid, snippet_at, toy_snippets
from lightning_adv.orderbook.lobster import Messages, OrderBook
from lightning_adv.orderbook.propagation import ASK, propagate_delta, routing

MS = 1_000_000  # ns


def _day(exec_type: int):
    """A LOBSTER day of three messages on a fixed book (ask 10.01 x 100, bid 10.00 x 100): two submissions,
    then at 25 ms one execution of ``exec_type`` of a sell order at 10.01 (a buyer-initiated trade)."""
    msgs = Messages(time_ns=np.array([0, 1 * MS, 25 * MS], np.int64), type=np.array([1, 1, exec_type], np.int8),
                    order_id=np.array([1, 2, 3 if exec_type == 5 else 1], np.int64),
                    size=np.array([100, 100, 40], np.int64), price=np.array([100_100, 100_000, 100_100], np.int64),
                    direction=np.array([-1, 1, -1], np.int8))
    ask_size = [100, 100, 60 if exec_type == 4 else 100]  # a hidden execution leaves the visible book unchanged
    book = OrderBook(ask_price=np.full((3, 1), 100_100, np.int64), ask_size=np.array(ask_size, np.int64).reshape(3, 1),
                     bid_price=np.array([[-9_999_999_999], [100_000], [100_000]], np.int64),
                     bid_size=np.array([[0], [100], [100]], np.int64))
    return build_day_grid("2012-06-21", msgs, book, 0, 60 * MS, 10 * MS)


@pytest.mark.parametrize("exec_type", [4, 5])
def test_visible_and_hidden_executions_at_its_price_execute_a_resting_attack_order(exec_type):
    day = _day(exec_type)
    assert day.exec_step.tolist() == [3] and day.exec_side.tolist() == [1]  # t = 25 ms lies in (20, 30]
    s = snippet_at(day, 1, 5, 1)  # grid steps 1..5: the execution is snippet step 2
    delta = torch.zeros(1, 5, 2, 1)
    delta[0, 0, ASK, 0] = 7  # 7 shares offered at 10.01 at step 0
    live = propagate_delta(routing(s), delta)[0, :, ASK, 0].tolist()
    # the type-4-only rule kept the order to the end ([7, 7, 7, 7, 7]) when the execution was hidden
    assert live == [7, 7, 0, 0, 0]


def test_executions_at_other_prices_or_sides_leave_it():
    day = _day(5)
    s = snippet_at(day, 1, 5, 1)
    delta = torch.zeros(1, 5, 2, 1)
    delta[0, 0, 1, 0] = 3  # on the bid at 10.00: the hidden execution hit the ask side at 10.01
    assert propagate_delta(routing(s), delta)[0, :, 1, 0].tolist() == [3] * 5


# ------------------------------------------------------------------ table 3.2
def _records(capital, relsize, fooled, ran):
    n = len(capital)
    t = torch.tensor
    return {"index": torch.arange(n), "label": torch.zeros(n, dtype=torch.long),
            "clean": t(ran), "g/correct": t(ran) & ~t(fooled), "g/ran": t(ran), "g/fooled": t(fooled),
            "g/norm": t(relsize, dtype=torch.float32), "g/queries": torch.full((n,), -1),
            "g/time": torch.zeros(n, dtype=torch.float64),
            "g/extra/capital": t(capital, dtype=torch.float64), "g/extra/relative_size": t(relsize, dtype=torch.float64)}


def test_table_3_2_means_over_successes_and_over_all_attempts_hand_computed():
    suite = AttackSuite([CapitalBoundedAttack(capital=1e5, levels=1, name="g")], cascade=False, sanity_checks=False)
    nan = float("nan")
    # five examples: one clean-misclassified (not attacked), two fooled, two where the attack failed
    rec = _records(capital=[nan, 1000.0, 30_000.0, 2000.0, 90_000.0], relsize=[nan, 0.1, 2.0, 0.3, 5.0],
                   fooled=[False, True, False, True, False], ran=[False, True, True, True, True])
    row = suite.report(rec, warn=False).rows[0]
    assert (row.n_fooled, row.n_attacked) == (2, 4)
    assert row.extras["capital"] == pytest.approx((1000 + 2000) / 2)             # the thesis' column
    assert row.extras["relative_size"] == pytest.approx((0.1 + 0.3) / 2)
    assert row.extras_all["capital"] == pytest.approx((1000 + 30_000 + 2000 + 90_000) / 4)
    assert row.extras_all["relative_size"] == pytest.approx((0.1 + 2.0 + 0.3 + 5.0) / 4)
    assert row.mean_norm == pytest.approx(0.2)  # the norm column was already a mean over successes
    table = suite.report(rec, warn=False).table()
    assert "capital (successes)" in table and "capital (all attempts)" in table and "| 2/4 " in table
    none = suite.report(_records([5.0, 6.0], [0.1, 0.2], [False, False], [True, True]), warn=False).rows[0]
    assert math.isnan(none.extras["capital"]) and none.extras_all["capital"] == pytest.approx(5.5)


def test_table_3_2_through_the_suite_with_failed_attacks():
    torch.manual_seed(0)
    x, y = toy_snippets(48, steps=20, levels=3, seed=1)
    model = LinearValuation(steps=20)
    with torch.no_grad():
        y = model(x).argmax(1)  # every example clean-correct, so every one is attacked
    suite = AttackSuite([CapitalBoundedAttack(capital=3000.0, steps=15, alpha0=3.0, levels=3, name="g")],
                        cascade=False, sanity_checks=False)
    report, rec = suite.evaluate(model, x, y, batch_size=48)
    row, fooled = report.rows[0], rec["g/fooled"]
    assert 0 < row.n_fooled < row.n_attacked == 48  # some attacks succeed, some fail
    cap = rec["g/extra/capital"]
    assert row.extras["capital"] == pytest.approx(float(cap[fooled].mean()))
    assert row.extras_all["capital"] == pytest.approx(float(cap.mean()))
    assert row.extras["capital"] != pytest.approx(row.extras_all["capital"], rel=1e-3)
