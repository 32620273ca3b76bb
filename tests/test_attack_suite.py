"""Unit tests of the evaluation suite's attacks, report and sanity checks (small synthetic models)."""
from __future__ import annotations

import csv
import json
import warnings

import pytest
import torch
from torch import nn

from lightning_adv.attacks import (
    FGSM, MIFGSM, PGD, AttackSuite, AutoAttack, CarliniWagnerL2, DeepFool, GradientMaskingWarning, Square,
    ZerothOrder, dedup_records, zo_gradient,
)

torch.set_num_threads(1)


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10)).eval()


def _data(model: nn.Module, n: int = 24, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 8, 8, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)  # every point clean-correct
    return x, y


def _norm(delta: torch.Tensor, p: str) -> torch.Tensor:
    return delta.flatten(1).abs().max(1).values if p == "linf" else delta.flatten(1).norm(dim=1)


BOUNDED = [
    FGSM(eps=0.05), PGD(eps=0.05, steps=10), PGD(eps=0.5, steps=10, norm="l2", restarts=2),
    MIFGSM(eps=0.05, steps=10), MIFGSM(eps=0.5, steps=10, norm="l2"), DeepFool(norm="linf", eps=0.03),
    DeepFool(norm="l2", eps=0.2), CarliniWagnerL2(steps=20, search_steps=2, eps=0.3),
    ZerothOrder(eps=0.05, max_queries=200, samples=5), ZerothOrder(eps=0.4, norm="l2", max_queries=100, two_point=False),
    Square(eps=0.05, n_queries=100), Square(eps=0.4, norm="l2", n_queries=100), AutoAttack(eps=0.05),
    AutoAttack(eps=0.4, norm="l2", components=["apgd-ce", "square"]),
]


@pytest.mark.parametrize("attack", BOUNDED, ids=lambda a: a.label)
def test_attack_respects_bound_and_image_range_and_modes(attack):
    model = _mlp()
    model.train()  # the attack must switch to eval and restore
    x, y = _data(model.eval())
    model.train()
    grads_before = [p.grad for p in model.parameters()]
    with torch.inference_mode():  # as under trainer.test with inference mode on
        out = attack.run(model, x, y)
    assert model.training  # mode restored
    assert all(p.requires_grad for p in model.parameters())
    assert [p.grad for p in model.parameters()] == grads_before  # no parameter gradients
    assert out.x_adv.shape == x.shape
    assert out.x_adv.min() >= 0 and out.x_adv.max() <= 1
    assert (_norm(out.x_adv - x, attack.norm) <= attack.eps + 1e-5).all()
    with torch.no_grad():
        fooled = (model.eval()(out.x_adv).argmax(1) != y).float().mean()
    assert fooled > 0  # each attack breaks something on a random small net
    if attack.black_box:
        assert out.queries is not None and (out.queries >= 1).all()


def test_unbounded_deepfool_crosses_the_boundary_with_small_perturbations():
    model = _mlp()
    x, y = _data(model)
    out = DeepFool(norm="l2", steps=50).run(model, x, y)
    with torch.no_grad():
        assert (model(out.x_adv).argmax(1) != y).float().mean() >= 0.95
    # a minimal-norm attack: much smaller than a random direction that flips labels would need
    assert _norm(out.x_adv - x, "l2").median() < 1.0


def test_attacks_keep_rng_state_and_reject_bad_values():
    model = _mlp()
    x, y = _data(model, n=4)
    torch.manual_seed(123)
    torch.randint(0, 2**62, (1,))  # an attack draws exactly one seed from the global stream ...
    expected = torch.rand(3)
    torch.manual_seed(123)
    AutoAttack(eps=0.05, components=["apgd-ce"]).run(model, x, y)  # ... and the library's reseeding stays in a fork
    assert torch.equal(torch.rand(3), expected)
    for bad in [lambda: PGD(eps=-1), lambda: PGD(eps=2.0), lambda: MIFGSM(steps=0),
                lambda: DeepFool(norm="l3"), lambda: CarliniWagnerL2(target_mode="x"), lambda: Square(p_init=0),
                lambda: ZerothOrder(max_queries=3, samples=10), lambda: AutoAttack(eps=0.1, components=["fab"])]:
        with pytest.raises(ValueError):
            bad()


def test_targeted_cw_reaches_the_target_on_an_easy_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()  # linear: every target reachable
    x, y = _data(model, n=16)
    targets = (y + 3) % 10
    attack = CarliniWagnerL2(steps=100, search_steps=4, lr=0.05, c=10.0, targeted=True)
    out = attack.run(model, x, y, targets=targets)
    with torch.no_grad():
        pred = model(out.x_adv).argmax(1)
    assert (pred == targets).float().mean() >= 0.9
    untargeted = CarliniWagnerL2(steps=100, search_steps=4, lr=0.05, c=10.0).run(model, x, y)
    # reaching a chosen class costs at least as much as leaving the true one
    assert _norm(untargeted.x_adv - x, "l2").mean() <= _norm(out.x_adv - x, "l2").mean() + 1e-6


def test_zeroth_order_estimate_correlates_with_gradient_and_counts_queries():
    torch.manual_seed(0)
    w = torch.randn(64, 16)

    calls = {"n": 0}

    def f(z: torch.Tensor) -> torch.Tensor:  # smooth: sum(sin(z W))
        calls["n"] += 1
        return torch.sin(z.flatten(1) @ w).sum(1)

    x = torch.rand(5, 1, 8, 8)
    xg = x.clone().requires_grad_(True)
    (true,) = torch.autograd.grad(f(xg).sum(), xg)
    calls["n"] = 0
    for two_point, expected_queries in [(True, 2 * 400), (False, 400 + 1)]:
        calls["n"] = 0
        est, queries = zo_gradient(f, x, mu=1e-3, samples=400, two_point=two_point,
                                   generator=torch.Generator().manual_seed(0))
        assert queries == expected_queries == calls["n"]
        cos = torch.nn.functional.cosine_similarity(est.flatten(1), true.flatten(1), dim=1)
        assert (cos > 0.8).all(), cos
    # few samples: noisier, still positively correlated on average
    est, _ = zo_gradient(f, x, mu=1e-3, samples=5, generator=torch.Generator().manual_seed(1))
    assert torch.nn.functional.cosine_similarity(est.flatten(1), true.flatten(1), dim=1).mean() > 0.1


def test_zeroth_order_attack_query_count_is_exact():
    model = _mlp()
    x, y = _data(model, n=12)
    rows = {"n": 0}

    def counted(z: torch.Tensor) -> torch.Tensor:
        rows["n"] += z.shape[0]
        return model(z)

    attack = ZerothOrder(eps=0.05, max_queries=150, samples=4)
    out = attack.run(counted, x, y, mode_module=model)
    assert int(out.queries.sum()) == rows["n"]
    assert (out.queries <= 150).all()
    per_iter = 1 + 2 * 4
    with torch.no_grad():
        fooled = model(out.x_adv).argmax(1) != y
    # unbroken examples spent their whole budget (whole iterations only)
    assert (out.queries[~fooled] == (150 // per_iter) * per_iter).all()


def _suite(cascade: bool) -> AttackSuite:
    return AttackSuite([FGSM(eps=0.03), PGD(eps=0.03, steps=10), Square(eps=0.03, n_queries=50)],
                       cascade=cascade)


def test_cascade_and_run_all_agree_on_worst_case_and_files_parse(tmp_path):
    model = _mlp()
    x, y = _data(model, n=40)
    y[:4] = (y[:4] + 1) % 10  # some clean mistakes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GradientMaskingWarning)
        rep_c, rec_c = _suite(True).evaluate(model, x, y, batch_size=16)
        rep_a, rec_a = _suite(False).evaluate(model, x, y, batch_size=16)
    assert rep_c.n == rep_a.n == 40
    assert rep_c.clean_acc == pytest.approx(0.9)
    # cascade: each row is the cumulative accuracy, non-increasing, last equals the worst case
    accs = [r.robust_acc for r in rep_c.rows]
    assert accs == sorted(accs, reverse=True) and accs[-1] == pytest.approx(rep_c.worst_case_acc)
    assert rep_c.rows[1].n_attacked == int(rec_c["fgsm_linf_eps7.65/correct"].sum())
    # run-all: every attack attacked every clean-correct point; worst case = AND of the rows
    assert all(r.n_attacked == 36 for r in rep_a.rows)
    manual = rec_a["clean"].clone()
    for r in rep_a.rows:
        manual &= rec_a[f"{r.name}/correct"]
    assert rep_a.worst_case_acc == pytest.approx(manual.float().mean().item())
    assert abs(rep_a.worst_case_acc - rep_c.worst_case_acc) <= 0.05  # same attacks, different subsets
    # the deterministic white-box attacks give the same per-example results either way
    assert torch.equal(rec_a["fgsm_linf_eps7.65/correct"], rec_c["fgsm_linf_eps7.65/correct"])
    paths = rep_a.write(str(tmp_path), "suite", records=rec_a)
    data = json.loads(open(paths[0]).read())
    assert data["n"] == 40 and data["mode"] == "run-all"
    assert [r["name"] for r in data["rows"]] == [a.label for a in _suite(False).attacks]
    rows = list(csv.DictReader(open(paths[1])))
    assert rows[0]["name"] == "clean" and rows[-1]["name"] == "worst_case"
    assert float(rows[-1]["robust_acc"]) == pytest.approx(rep_a.worst_case_acc)
    ex = list(csv.DictReader(open(paths[2])))
    assert len(ex) == 40 and sum(int(r["worst_case_correct"]) for r in ex) == round(40 * rep_a.worst_case_acc)
    assert rep_a.rows[2].mean_queries is not None and rep_a.rows[2].max_queries <= 51
    assert rep_a.rows[1].max_norm <= 0.03 + 1e-6
    table = rep_a.table()
    assert "worst case" in table and "square" in table


def test_dedup_keeps_each_index_once():
    rec = {"index": torch.tensor([3, 0, 1, 3, 0]), "clean": torch.tensor([True, False, True, True, False])}
    out = dedup_records(rec)
    assert sorted(out["index"].tolist()) == [0, 1, 3]


class _Quantise(nn.Module):
    """Non-differentiable input quantisation: zero gradient almost everywhere."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x * 4) / 4


def test_sanity_flags_on_a_randomised_model_and_budget_inversion():
    model = _mlp()
    x, y = _data(model, n=32)

    class Noisy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = model

        def forward(self, z):
            return self.net(z + 0.5 * torch.randn_like(z))  # randomised defense

    suite = AttackSuite([FGSM(eps=0.02, name="weak"),
                         PGD(eps=0.02, steps=20, name="strong")], cascade=False, tolerance=0.0)
    with pytest.warns(GradientMaskingWarning, match="eps0_not_clean"):
        report, _ = suite.evaluate(Noisy().eval(), x, y)
    assert "eps0_not_clean" in {f.check for f in report.flags}
    assert report.table().count("WARNING") == len(report.flags)
    # a clean deterministic model raises no flag
    with warnings.catch_warnings():
        warnings.simplefilter("error", GradientMaskingWarning)
        clean_report, _ = AttackSuite([FGSM(eps=0.02, name="weak"),
                                       PGD(eps=0.02, steps=20, name="strong")], cascade=False).evaluate(model, x, y)
    assert clean_report.flags == []
    # more budget with higher accuracy is flagged (here by giving the 'stronger' attack a useless step)
    inverted = AttackSuite([FGSM(eps=0.02, name="fgsm"),
                            PGD(eps=0.02, steps=20, step_size=1e-6, random_start=False, name="pgd_tiny_steps")],
                           cascade=False, tolerance=0.0, sanity_checks=False)
    with pytest.warns(GradientMaskingWarning):
        inv_report, _ = inverted.evaluate(model, x, y)
    assert [f.check for f in inv_report.flags] == ["more_budget_higher_accuracy"]


def test_autoattack_matches_the_authors_run_standard_evaluation():
    """Our per-batch cascade of pyautoattack's attacks gives the authors' own result, to the pixel."""
    from pyautoattack import AutoAttack as AuthorsAutoAttack

    model = _mlp()
    x, y = _data(model, n=32)
    ours = AutoAttack(eps=0.03, seed=0).run(model, x, y).x_adv
    ref = AuthorsAutoAttack(model, eps=0.03, norm="Linf", version="standard", seed=0, device="cpu")
    theirs = ref.run_standard_evaluation(x, y, batch_size=250)
    theirs = theirs[0] if isinstance(theirs, tuple) else theirs
    with torch.no_grad():
        robust = (model(ours).argmax(1) == y).float().mean()
    assert 0 < robust < 1  # some points reach FAB-T and Square, some are broken earlier
    assert torch.equal(ours, theirs)
