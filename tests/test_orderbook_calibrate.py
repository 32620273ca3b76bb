"""calibrate(): the simulator's parameters recovered from simulated days, statistics of calibrated days, presets."""
from __future__ import annotations

from dataclasses import replace

import pytest

from lightning_adv.orderbook.calibrate import PRESETS, calibrate, day_statistics, lobster_view, preset
from lightning_adv.orderbook.simulator import SimulatorConfig, simulate_day

TEN_MINUTES = dict(start_ms=34_200_000, end_ms=34_800_000)
TRUE = {  # far from the defaults, so a fit that returned the defaults would fail
    "best": SimulatorConfig(**TEN_MINUTES, initial_price=50.0, limit_rate=8.0, market_rate=2.0, cancel_rate=0.04,
                            partial_cancel_prob=0.1, hidden_exec_prob=0.3, depth_decay=0.15, improve_prob=0.5,
                            improve_max_ticks=4, round_lot_prob=0.5, lot_scale=0.5, hidden_inside_prob=0.8),
    "mid": SimulatorConfig(**TEN_MINUTES, initial_price=120.0, limit_rate=6.0, market_rate=1.0, cancel_rate=0.08,
                           partial_cancel_prob=0.4, hidden_exec_prob=0.4, depth_decay=0.08, anchor="mid",
                           round_lot_prob=0.3, lot_scale=2.0, hidden_inside_prob=0.6),
}
# relative tolerance for rates, sizes and depth_decay; absolute for probabilities (10 simulated minutes)
REL = ("limit_rate", "market_rate", "cancel_rate", "depth_decay", "lot_scale")
ABS = ("partial_cancel_prob", "hidden_exec_prob", "round_lot_prob", "hidden_inside_prob")


@pytest.fixture(scope="module", params=sorted(TRUE))
def fitted(request):
    true = TRUE[request.param]
    day = simulate_day(true, 0)
    return true, day, calibrate([day], base=SimulatorConfig(**TEN_MINUTES))


def test_calibrate_recovers_the_parameters_of_a_simulated_day(fitted):
    true, _, fit = fitted
    for name in REL:
        assert getattr(fit, name) == pytest.approx(getattr(true, name), rel=0.1), name
    for name in ABS:
        assert getattr(fit, name) == pytest.approx(getattr(true, name), abs=0.05), name
    # initial_price is the first mid of the window, after the simulator's unrecorded warm-up has moved it
    assert fit.anchor == true.anchor and fit.initial_price == pytest.approx(true.initial_price, rel=0.02)
    if true.anchor == "best":
        assert fit.improve_max_ticks == true.improve_max_ticks
        assert fit.improve_prob == pytest.approx(true.improve_prob, abs=0.05)


def test_a_calibrated_day_matches_its_target_statistics(fitted):
    _, target_day, fit = fitted
    # another day (other seed); tolerances cover the day-to-day spread of 10-minute windows with the TRUE
    # parameters (measured: mean spread 1.8-2.3 ticks, hidden-inside share 0.25-0.33 on the "mid" book)
    target, got = day_statistics(*target_day), day_statistics(*simulate_day(fit, 7))
    assert got.messages_per_second == pytest.approx(target.messages_per_second, rel=0.1)
    for t in range(1, 6):
        assert got.type_shares[t] == pytest.approx(target.type_shares[t], abs=0.02), t
    assert got.spread_ticks_mean == pytest.approx(target.spread_ticks_mean, rel=0.3)
    assert got.depth_best == pytest.approx(target.depth_best, rel=0.3)
    assert got.level_gap_ticks == pytest.approx(target.level_gap_ticks, rel=0.2)
    assert got.round_lot_share == pytest.approx(target.round_lot_share, abs=0.03)
    assert got.hidden_inside_share == pytest.approx(target.hidden_inside_share, abs=0.15)


def test_presets_have_their_kind_of_book():
    ford = day_statistics(*simulate_day(preset("ford_like", end_ms=34_320_000), 0))
    assert ford.spread_one_tick_share > 0.9 and 0.05 <= ford.type_shares[5] <= 0.09 and 8 < ford.mid_price < 10
    m, b = simulate_day(preset("amzn_2012", end_ms=34_500_000), 0)
    wide = day_statistics(*lobster_view(m, b, 1))
    assert wide.spread_ticks_mean > 4 and wide.spread_one_tick_share < 0.1 and wide.hidden_inside_share > 0.9
    assert 200 < wide.mid_price < 250 and set(PRESETS) == {"ford_like", "amzn_2012"}
    with pytest.raises(ValueError, match="preset='nope' is unknown"):
        preset("nope")
    with pytest.raises(ValueError, match="calibrate needs at least one day"):
        calibrate([])
    with pytest.raises(ValueError, match="simulate.anchor"):
        SimulatorConfig(anchor="ask")


def test_refine_recovers_what_a_level_1_file_hides():
    # a wide-spread day seen as a level-1 file: the moments see only submissions near the top of the book,
    # so alone they give too dense a book; refine matches the level-1 view's spread, rate and executions
    window = dict(end_ms=34_200_000 + 1_800_000)
    days = [lobster_view(*simulate_day(preset("amzn_2012", **window), 0), 1)]
    target, base = day_statistics(*days[0]), SimulatorConfig(**window)

    def level_1_view(fit):
        return day_statistics(*lobster_view(*simulate_day(replace(fit, levels=10, seed=50), 0), 1))
    moments, refined = (level_1_view(calibrate(days, base=base, refine=r, refine_seconds=900)) for r in (0, 4))
    assert moments.spread_ticks_mean < 0.6 * target.spread_ticks_mean
    assert refined.spread_ticks_mean == pytest.approx(target.spread_ticks_mean, rel=0.25)
    assert refined.messages_per_second == pytest.approx(target.messages_per_second, rel=0.1)
    execs = [s.type_shares[4] + s.type_shares[5] for s in (refined, target)]
    assert execs[0] == pytest.approx(execs[1], abs=0.03)
