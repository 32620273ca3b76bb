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


# ------------------------------------------------------------------ propagation
from lightning_adv.orderbook.propagation import ASK, BID, propagate, propagate_delta, routing, unpropagated  # noqa: E402
from lightning_adv.orderbook.toy import toy_snippets  # noqa: E402


def flat_book(execs=(), steps=4) -> BookSnippet:
    """Ask 10.01/10.02 and bid 10.00/9.99 at every step."""
    return make_snippet([[10.01, 10.02]] * steps, [[100, 100]] * steps, [[10.00, 9.99]] * steps,
                        [[100, 100]] * steps, execs=execs)


def placed(shape, *entries):
    d = torch.zeros(shape)
    for (i, side, level, n) in entries:
        d[0, i, side, level] = n
    return d


def test_order_leaves_exactly_at_an_execution_at_its_price_and_side():
    s = flat_book(execs=[(2, 10.01, 1), (1, 10.02, -1), (1, 10.00, 1)])  # only the first hits the ask at 10.01
    d = placed((1, 4, 2, 2), (0, ASK, 0, 5), (2, ASK, 0, 3), (0, ASK, 1, 7), (0, BID, 0, 2))
    out = propagate_delta(routing(s), d)[0]
    assert out[:, ASK, 0].tolist() == [5, 5, 3, 3]  # 5 executed at step 2; 3 placed at step 2 survive it
    assert out[:, ASK, 1].tolist() == [7, 7, 7, 7]  # a bid-side execution at 10.02 does not touch the ask
    assert out[:, BID, 0].tolist() == [2, 2, 2, 2]  # an ask-side execution at 10.00 does not touch the bid
    r = routing(s)
    assert r.exec_at[0, 0, ASK, 0].item() == 2 and r.exec_at[0, 2, ASK, 0].item() == 4  # 4 = never


def test_order_stays_at_its_price_while_levels_shift_and_hides_outside_the_book():
    # ask: 10.01 | 10.02 ; then 10.02 | 10.03 (10.01 gone, no execution) ; then back to 10.01 | 10.02
    s = make_snippet([[10.01, 10.02], [10.02, 10.03], [10.01, 10.02]], [[100, 100]] * 3,
                     [[10.00, 9.99]] * 3, [[100, 100]] * 3)
    d = placed((1, 3, 2, 2), (0, ASK, 0, 4), (0, ASK, 1, 6))
    out = propagate_delta(routing(s), d)[0]
    assert out[:, ASK, 0].tolist() == [4, 6, 4]   # level 0 holds 10.01, then 10.02 (the 6), then 10.01 again
    assert out[:, ASK, 1].tolist() == [6, 0, 6]   # 10.02 moved from level 1 to level 0 and back
    pert = propagate(s, d)
    assert torch.equal(pert.ask_price, s.ask_price)
    assert pert.ask_size[0, 1].tolist() == [106, 100]


def _reference_propagation(s: BookSnippet, d: torch.Tensor) -> torch.Tensor:
    """Loop over placements and later steps: the rules of propagation.py written out plainly."""
    out = torch.zeros_like(d, dtype=torch.float64)
    b_, t_, _, l_ = d.shape
    prices = [s.ask_price, s.bid_price]
    for b in range(b_):
        execs = [(int(st), round(float(p) * 10000), 0 if int(sd) > 0 else 1)
                 for st, p, sd in zip(s.exec_step[b], s.exec_price[b], s.exec_side[b]) if int(sd) != 0]
        for i in range(t_):
            for side in range(2):
                for lv in range(l_):
                    n = float(d[b, i, side, lv])
                    p = prices[side][b, i, lv].item()
                    if n == 0 or math.isnan(p):
                        continue
                    tick = round(p * 10000)
                    for t in range(i, t_):
                        if t > i and any(st == t and tk == tick and sd == side for st, tk, sd in execs):
                            break
                        row = [round(q * 10000) if not math.isnan(q) else None for q in prices[side][b, t].tolist()]
                        if tick in row:
                            out[b, t, side, row.index(tick)] += n
    return out


def test_propagation_matches_the_plain_rules_on_random_books_and_stays_whole():
    s, _ = toy_snippets(3, steps=30, levels=3, move_prob=0.5, exec_prob=0.3, seed=3)
    g = torch.Generator().manual_seed(0)
    d = (torch.rand(3, 30, 2, 3, generator=g) < 0.2).float() * torch.randint(1, 50, (3, 30, 2, 3), generator=g)
    out = propagate_delta(routing(s), d)
    assert torch.equal(out.double(), _reference_propagation(s, d))
    assert (out >= 0).all() and torch.equal(out, out.round())
    pert = propagate(s, d)
    assert (pert.ask_size >= s.ask_size).all() and (pert.bid_size >= s.bid_size).all()


def test_propagation_is_differentiable_and_unpropagated_shows_orders_once():
    s = flat_book(execs=[(2, 10.01, 1)])
    d = placed((1, 4, 2, 2), (0, ASK, 0, 5)).requires_grad_(True)
    propagate_delta(routing(s), d).sum().backward()
    assert d.grad[0, 0, ASK, 0].item() == 2  # visible in snapshots 0 and 1
    assert d.grad[0, 3, BID, 1].item() == 1
    u = unpropagated(s, d.detach())
    assert (u.ask_size - s.ask_size)[0, :, 0].tolist() == [5, 0, 0, 0]


# ------------------------------------------------------------------ measures
from lightning_adv.orderbook.measures import capital, cost, end_price, measures, relative_size  # noqa: E402


def test_measures_on_a_hand_computed_example():
    # 3 steps; the book moves up at step 2 (ask 10.03/10.04, bid 10.02/10.01 -> end mid 10.025)
    s = make_snippet([[10.01, 10.02], [10.01, 10.02], [10.03, 10.04]], [[100, 100]] * 3,
                     [[10.00, 9.99], [10.00, 9.99], [10.02, 10.01]], [[100, 100]] * 3,
                     execs=[(2, 10.01, 1), (2, 10.02, 1)])
    d = placed((1, 3, 2, 2), (0, ASK, 0, 5), (1, BID, 0, 3))
    assert capital(s, d).item() == pytest.approx(5 * 10.01 + 3 * 10.00, abs=1e-9)
    assert end_price(s).item() == pytest.approx(10.025, abs=1e-12)
    # the sell of 5 at 10.01 executes (the stock ends at 10.025: 5 x 0.015 lost); the bid order never executes
    assert cost(s, d).item() == pytest.approx(5 * 0.015, abs=1e-9)
    # propagated shares: 5 + 5 (ask, steps 0-1) + 3 + 0 (bid at 10.00 leaves the visible book at step 2)
    assert relative_size(s, d).item() == pytest.approx(100 * 13 / 1200, abs=1e-9)
    m = measures(s, d)
    assert set(m) == {"capital", "cost", "relative_size", "shares"} and m["shares"].item() == 8
    # a buy that executes at 10.02 and ends valued at 10.025 is a gain (negative cost)
    s2 = make_snippet([[10.03, 10.04]] * 3, [[100, 100]] * 3, [[10.02, 10.01]] * 3, [[100, 100]] * 3,
                      execs=[(1, 10.02, -1)])
    assert cost(s2, placed((1, 3, 2, 2), (0, BID, 0, 2))).item() == pytest.approx(-2 * 0.005, abs=1e-9)


# ------------------------------------------------------------------ attacks
from lightning_adv.attacks import AttackSuite  # noqa: E402
from lightning_adv.orderbook.attacks import CapitalBoundedAttack, OrderBookAttack, RandomOrders, round_shares  # noqa: E402
from lightning_adv.orderbook.models import create_valuation_model  # noqa: E402

STEPS, LEVELS = 40, 4


@pytest.fixture(scope="module")
def trained():
    """A linear valuation model trained on toy snippets with a planted trend, and held-out snippets."""
    torch.manual_seed(0)
    x, y = toy_snippets(800, steps=STEPS, levels=LEVELS, seed=1)
    model = create_valuation_model("linear", steps=STEPS)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(10):
        for i in range(0, 800, 100):
            loss = torch.nn.functional.cross_entropy(model(x[i:i + 100]), y[i:i + 100])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    xt, yt = toy_snippets(200, steps=STEPS, levels=LEVELS, seed=2)
    return model, xt, yt


def test_round_shares_is_the_thesis_rounding():
    assert round_shares(torch.tensor([0.8, 0.04, 0.05, 2.0, -0.5]), 0.3).tolist() == [1, 0, 0, 2, 0]
    assert round_shares(torch.tensor([0.06, 0.04]), 0.95).tolist() == [1, 0]


def test_gradient_attack_respects_capital_after_rounding_and_beats_random(trained):
    model, x, y = trained
    clean = (model(x).argmax(1) == y).float().mean().item()
    assert clean > 0.5
    bound = 20_000.0
    grad = CapitalBoundedAttack(capital=bound, alpha0=5.0, steps=60, levels=LEVELS)
    out = grad.run(model, x, y)
    assert (out.extras["capital"] <= bound).all() and out.extras["capital"].max() > 0.5 * bound
    with torch.no_grad():
        adv = (model(out.x_adv).argmax(1) == y).float().mean().item()
    rand = RandomOrders(capital=20 * bound, levels=LEVELS).run(model, x, y)
    assert (rand.extras["capital"] <= 20 * bound).all() and rand.extras["capital"].min() > 19 * bound
    with torch.no_grad():
        adv_rand = (model(rand.x_adv).argmax(1) == y).float().mean().item()
    assert adv < clean - 0.15 and adv < adv_rand - 0.1, (clean, adv, adv_rand)


def test_suite_reports_order_book_attacks_per_example(trained):
    model, x, y = trained
    suite = AttackSuite([CapitalBoundedAttack(capital=2_000.0, steps=10, levels=LEVELS, name="grad"),
                         RandomOrders(capital=40_000.0, levels=LEVELS, name="rand")],
                        cascade=False, sanity_checks=False)
    report, rec = suite.evaluate(model, x, y, batch_size=64)
    assert report.n == 200 and {r.name for r in report.rows} == {"grad", "rand"}
    row = report.rows[0]
    assert set(row.extras) == set(row.extras_all) == {"capital", "cost", "relative_size", "shares"}
    assert row.extras_all["capital"] <= 2_000.0  # extras: over the successful attacks only (NaN: none)
    ran = rec["grad/ran"]
    assert torch.isfinite(rec["grad/extra/capital"][ran]).all() and torch.isnan(rec["grad/extra/capital"][~ran]).all()
    fooled = rec["grad/fooled"]
    # the suite's norm column is the relative size of the perturbation
    assert torch.allclose(rec["grad/norm"][fooled].double(), rec["grad/extra/relative_size"][fooled], rtol=1e-4)
    assert row.robust_acc <= report.clean_acc and "relsize%" in report.table()


def test_finalize_rejects_perturbations_that_break_the_rules(trained):
    model, x, y = trained

    class Seller(OrderBookAttack):
        def default_label(self):
            return "seller"

        def _perturb(self, model, x, y, targets):
            from lightning_adv.attacks.base import AttackOutput
            return AttackOutput(x.with_sizes(x.ask_size - 1, x.bid_size))

    with pytest.raises(RuntimeError, match="lowered"):
        Seller(levels=LEVELS).run(model, x[:4], y[:4])


@pytest.mark.parametrize(("kwargs", "match"), [
    (dict(capital=0.0), "capital"), (dict(capital=-5.0), "capital"), (dict(r=1.0), "r must"),
    (dict(r=-0.1), "r must"), (dict(alpha0=0.0), "alpha0"), (dict(levels=0), "levels"), (dict(steps=0), "steps")])
def test_gradient_attack_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CapitalBoundedAttack(**kwargs)


def test_bad_inputs_raise_before_the_attack(trained):
    model, x, y = trained
    with pytest.raises(ValueError, match=f"levels=10 but the snippets have only L={LEVELS}"):
        CapitalBoundedAttack(levels=10).run(model, x[:2], y[:2])
    with pytest.raises(ValueError, match="BookSnippet"):
        RandomOrders().run(model, torch.zeros(2, STEPS), y[:2])
    with pytest.raises(ValueError, match="capital"):
        RandomOrders(capital=0)
    with pytest.raises(ValueError, match="order_size"):
        RandomOrders(order_size=0)


# ------------------------------------------------------------------ models and module
from lightning_adv.orderbook.models import SWAFeatures  # noqa: E402


@pytest.mark.parametrize(("arch", "kw"), [("linear", {}), ("mlp", {"width": 8, "depth": 4}),
                                          ("lstm", {"hidden": 6, "layers": 3})])
def test_valuation_models_take_snippets_and_pass_gradients_to_sizes(arch, kw):
    x, _ = toy_snippets(3, steps=12, levels=2, seed=0)
    model = create_valuation_model(arch, steps=12, **kw)
    d = torch.zeros(3, 12, 2, 2, requires_grad=True)
    logits = model(propagate(x, d))
    assert logits.shape == (3, 3)
    (g,) = torch.autograd.grad(logits[:, 0].sum(), d)
    assert g.abs().sum() > 0
    with pytest.raises(ValueError, match="steps=12 but the snippet has T=10"):
        model(toy_snippets(1, steps=10, levels=2)[0])


def test_swa_features_are_basis_points_relative_to_the_last_value():
    f = SWAFeatures(1e4)(torch.tensor([[10.0, 10.01, 10.0]], dtype=torch.float64))
    assert f[0].tolist() == pytest.approx([0.0, 10.0, 0.0], abs=1e-4)


def test_valuation_model_bad_arguments():
    with pytest.raises(ValueError, match="arch='cnn'"):
        create_valuation_model("cnn", steps=10)
    with pytest.raises(ValueError, match=r"\['hidden'\]"):
        create_valuation_model("mlp", steps=10, hidden=3)
    with pytest.raises(ValueError, match="steps"):
        create_valuation_model("linear", steps=1)


class _Snippets(torch.utils.data.Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def collate(items):
    return collate_snippets([s for s, _ in items]), torch.stack([y for _, y in items])


def test_price_prediction_logs_accuracy_interval_and_baselines(tmp_path):
    import lightning.pytorch as pl

    from lightning_adv.modules import PricePrediction
    x, y = toy_snippets(120, steps=20, levels=2, seed=5)
    xt, yt = toy_snippets(50, steps=20, levels=2, seed=6)
    train = torch.utils.data.DataLoader(_Snippets(x, y), batch_size=40, collate_fn=collate)
    test = torch.utils.data.DataLoader(_Snippets(xt, yt), batch_size=25, collate_fn=collate)
    module = PricePrediction(arch="mlp", steps=20, arch_kwargs={"width": 8, "depth": 2})
    trainer = pl.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(module, train)
    assert module.train_label_counts.tolist() == (2 * torch.bincount(y, minlength=3)).tolist()
    res = trainer.test(module, test, verbose=False)[0]
    p = res["test/acc"]
    assert res["test/acc_se"] == pytest.approx(math.sqrt(p * (1 - p) / 50), rel=1e-5)
    assert res["test/baseline_random"] == pytest.approx(1 / 3)
    major = int(torch.bincount(y, minlength=3).argmax())
    assert res["test/baseline_majority"] == pytest.approx(float((yt == major).float().mean()), rel=1e-6)


# ------------------------------------------------------------------ universal, plots
from lightning_adv.orderbook.universal import fool_rate, placements_from_universal, train_universal  # noqa: E402


def test_universal_perturbation_fools_into_the_target_and_penalty_shrinks_it(trained):
    model, x, y = trained
    batches = [(x[i:i + 50], y[i:i + 50]) for i in range(0, 200, 50)]
    u = train_universal(model, batches, target=0, steps=30, levels=LEVELS, lr=5.0)
    assert u.shape == (STEPS, 2, LEVELS) and (u >= 0).all() and torch.equal(u, u.round())
    res = fool_rate(model, batches, u, target=0)
    none = fool_rate(model, batches, torch.zeros_like(u), target=0)
    assert none["fool_rate"] == 0 and res["fool_rate"] > 0.2 and res["n"] == none["n"] > 0
    small = train_universal(model, batches, target=0, steps=30, levels=LEVELS, lr=5.0, gamma=1.0)
    assert fool_rate(model, batches, small, target=0)["relative_size"] < 0.5 * res["relative_size"]
    # level-relative: the same shares at the same level index in every snippet (empty levels dropped)
    d = placements_from_universal(x[:2], u)
    assert torch.equal(d[0], d[1]) and torch.equal(d[0], u)
    with pytest.raises(ValueError, match="target"):
        train_universal(model, batches, target=3, steps=1)
    with pytest.raises(ValueError, match="levels=9"):
        train_universal(model, batches, target=0, steps=1, levels=9)


def test_figures_go_to_png_and_to_a_logger(tmp_path):
    from lightning_adv.orderbook.plots import figure_perturbation, figure_swa, save_figure
    x, _ = toy_snippets(2, steps=20, levels=3, seed=0)
    d = placed((1, 20, 2, 3), (2, ASK, 1, 50), (5, BID, 2, 30)).expand(2, -1, -1, -1).clone()

    class Exp:
        tags: list = []

        def add_figure(self, tag, fig, global_step=0, close=True):
            self.tags.append(tag)

    class Logger:
        experiment = Exp()

    logger = Logger()
    save_figure(figure_swa(x, propagate(x, d)), str(tmp_path / "swa.png"), logger, "lob/swa")
    save_figure(figure_perturbation(x, d), str(tmp_path / "pert.png"), logger, "lob/perturbation")
    assert (tmp_path / "swa.png").stat().st_size > 1000 and (tmp_path / "pert.png").stat().st_size > 1000
    assert logger.experiment.tags == ["lob/swa", "lob/perturbation"]


# ------------------------------------------------------------------ configs through train.py
from pathlib import Path  # noqa: E402

from helpers import load_config  # noqa: E402

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
TABLE_3_1 = sorted(CONFIG_DIR.glob("lob_[fgn]*_*.yaml"))


@pytest.fixture(scope="module")
def sim_days(tmp_path_factory):
    from lightning_adv.orderbook import SimulatorConfig, write_simulated_days
    root = tmp_path_factory.mktemp("lobster")
    write_simulated_days(root, SimulatorConfig(days=4, end_ms=34_500_000, levels=10, seed=1))
    return root


def _small_data(root) -> list[str]:
    return ["--data.data_dir", str(root), "--data.ticker", "null", "--data.simulate", "null",
            "--data.window", "[34200.0, 34500.0]", "--data.snippet_seconds", "2.0", "--data.horizon_seconds", "1.0",
            "--data.grid_seconds", "0.05", "--data.train_days", "3", "--data.test_days", "1", "--data.val_days", "1",
            "--data.batch_size", "16", "--data.train_samples_per_epoch", "32", "--data.val_samples", "16",
            "--data.test_samples", "16", "--model.steps", "40", "--trainer.accelerator", "cpu",
            "--trainer.enable_progress_bar", "false"]


def test_table_3_1_configs_cover_three_tickers_and_models():
    got = {(p.stem.split("_")[1], load_config(p)["model"]["init_args"]["arch"]) for p in TABLE_3_1}
    assert got == {(t, m) for t in ("f", "ge", "nvda") for m in ("linear", "mlp", "lstm")}
    for p in TABLE_3_1:
        raw = load_config(p)
        assert raw["data"]["init_args"]["data_dir"].endswith(raw["data"]["init_args"]["ticker"])
        assert raw["model"]["init_args"]["steps"] == 6000 and raw["data"]["init_args"]["levels"] == 10


@pytest.mark.parametrize("name", ["lob_f_linear", "lob_ge_mlp", "lob_nvda_lstm"])
def test_table_3_1_config_fits_through_the_cli(name, sim_days, tmp_path):
    from lightning_adv.cli import main
    small = {"mlp": '{"width": 16, "depth": 4}', "lstm": '{"hidden": 8, "layers": 3}', "linear": "{}"}
    arch = name.split("_")[-1]
    cli = main(["fit", "--config", str(CONFIG_DIR / f"{name}.yaml"), *_small_data(sim_days),
                "--model.arch_kwargs", small[arch], "--trainer.fast_dev_run", "1", "--trainer.logger", "false",
                "--trainer.default_root_dir", str(tmp_path)])
    assert cli.trainer.state.finished and cli.trainer.global_step >= 1 and "val/acc" in cli.trainer.callback_metrics
    assert cli.model.hparams.arch == arch


def test_quickstart_and_attack_config_through_the_cli(sim_days, tmp_path, capsys):
    from lightning_adv.cli import main
    args = [*_small_data(sim_days), "--data.levels", "5", "--trainer.default_root_dir", str(tmp_path),
            "--trainer.logger", "false", "--trainer.max_epochs", "1"]
    fit = main(["fit", "--config", str(CONFIG_DIR / "lob_quickstart.yaml"), *args])
    ckpt = Path(fit.trainer.checkpoint_callback.last_model_path)
    assert ckpt.is_file()
    test = main(["test", "--config", str(CONFIG_DIR / "lob_quickstart.yaml"), "--config",
                 str(CONFIG_DIR / "lob_quickstart_attacks.yaml"), *args, "--data.eval_batch_size", "16",
                 "--ckpt_path", str(ckpt)])
    m = test.trainer.callback_metrics
    assert {"test/robust_acc/gradient", "test/robust_acc/random", "test/robust_acc", "test/acc_se",
            "test/baseline_majority"} <= set(m)
    assert float(m["test/robust_acc/gradient"]) <= float(m["test/acc"])
    report = [c for c in test.trainer.callbacks if type(c).__name__ == "AttackSuiteEvaluation"][0].report
    assert report.n == 16 and set(report.rows[1].extras) == {"capital", "cost", "relative_size", "shares"}
    assert "gradient" in capsys.readouterr().out
