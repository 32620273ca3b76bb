"""Order-book tensors, propagation of attack orders, measures and attacks (chapter 3)."""
from __future__ import annotations

import math

import pytest
import torch

from lightning_adv.orderbook import BookSnippet, collate_snippets, swa

NAN = float("nan")


def make_snippet(ask_price, ask_size, bid_price, bid_size, execs=()) -> BookSnippet:
    """One snippet (B=1) from (T, L) nested lists and execs [(step, price, side), ...]."""
    e = list(execs)
    return BookSnippet(
        ask_price=torch.tensor([ask_price], dtype=torch.float64), ask_size=torch.tensor([ask_size], dtype=torch.float32),
        bid_price=torch.tensor([bid_price], dtype=torch.float64), bid_size=torch.tensor([bid_size], dtype=torch.float32),
        exec_step=torch.tensor([[s for s, _, _ in e]], dtype=torch.int64).reshape(1, len(e)),
        exec_price=torch.tensor([[p for _, p, _ in e]], dtype=torch.float64).reshape(1, len(e)),
        exec_side=torch.tensor([[d for _, _, d in e]], dtype=torch.int8).reshape(1, len(e)))


def two_level_book(execs=()) -> BookSnippet:
    # T = 3 steps, L = 2 levels; the ask moves up one tick at step 2
    return make_snippet(
        ask_price=[[10.01, 10.02], [10.01, 10.02], [10.02, 10.03]], ask_size=[[100, 200], [100, 200], [50, 300]],
        bid_price=[[10.00, 9.99], [10.00, 9.99], [10.00, NAN]], bid_size=[[300, 100], [300, 100], [300, 0]],
        execs=execs)


# ------------------------------------------------------------------ book
def test_swa_hand_computed_and_ignores_empty_levels():
    s = two_level_book()
    got = swa(s)
    assert got.shape == (1, 3) and got.dtype == torch.float64
    want0 = (10.01 * 100 + 10.02 * 200 + 10.00 * 300 + 9.99 * 100) / 700
    want2 = (10.02 * 50 + 10.03 * 300 + 10.00 * 300) / 650  # the NaN bid level is ignored
    assert got[0, 0].item() == pytest.approx(want0, abs=1e-12)
    assert got[0, 2].item() == pytest.approx(want2, abs=1e-12)
    same = swa(s.ask_price, s.ask_size, s.bid_price, s.bid_size)
    assert torch.equal(same, got)


def test_swa_is_differentiable_in_sizes():
    s = two_level_book()
    a = s.ask_size.clone().requires_grad_(True)
    swa(s.ask_price, a, s.bid_price, s.bid_size).sum().backward()
    # more shares at an ask above the SWA raise it
    assert a.grad[0, 0, 1] > 0
    assert torch.isfinite(a.grad).all()


def test_collate_pads_executions_and_indexing():
    a = two_level_book(execs=[(1, 10.01, 1)])
    b = two_level_book(execs=[(1, 10.00, -1), (2, 10.02, 1), (2, 10.02, 1)])
    batch = collate_snippets([a, b])
    assert (batch.batch_size, batch.steps, batch.levels) == (2, 3, 2)
    assert batch.exec_step.shape == (2, 3)
    assert batch.exec_step[0].tolist() == [1, -1, -1] and batch.exec_side[0].tolist() == [1, 0, 0]
    assert math.isnan(batch.exec_price[0, 1].item())
    sub = batch[torch.tensor([1])]
    assert sub.batch_size == 1 and sub.exec_side[0].tolist() == [-1, 1, 1]
    assert batch[0].batch_size == 1 and batch[1:].batch_size == 1
    assert batch[torch.tensor([True, False])].exec_step[0, 0].item() == 1
    assert batch.to("cpu").device.type == "cpu" and len(batch) == 2
    with pytest.raises(ValueError, match="differ in"):
        collate_snippets([a, make_snippet([[10.01]], [[1]], [[10.0]], [[1]])])


def test_snippet_rejects_mismatched_shapes():
    s = two_level_book()
    with pytest.raises(ValueError, match="bid_size"):
        BookSnippet(s.ask_price, s.ask_size, s.bid_price, s.bid_size[:, :2], s.exec_step, s.exec_price, s.exec_side)
