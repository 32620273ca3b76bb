"""Adaptive attacks (issue 10, item 4): EOT, BPDA and AutoAttack 'rand' measure defenses that break
gradients instead of praising them. Real data: scikit-learn digits, a naturally trained MLP."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightning_adv.attacks import BPDA, PGD, AttackSuite, AutoAttack, Square, input_gradient, cross_entropy_loss
from lightning_adv.defenses import GaussianNoise, Quantize

EPS = 0.2


def _train(pre: nn.Module | None, x: torch.Tensor, y: torch.Tensor) -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    model = net if pre is None else nn.Sequential(pre, net)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(25):
        for i in range(0, x.shape[0], 64):
            opt.zero_grad()
            F.cross_entropy(model(x[i:i + 64]), y[i:i + 64]).backward()
            opt.step()
    return net.eval()


@pytest.fixture(scope="module")
def digits(digits_split):
    xtr, ytr, xte, yte = digits_split
    return xtr, ytr, xte[:256], yte[:256]


def _acc(model, attacks, x, y):
    rep, _ = AttackSuite(attacks, cascade=False).evaluate(model, x, y, warn=False)
    return rep, {r.name: r.robust_acc for r in rep.rows}


def _pgd(**kw) -> PGD:
    return PGD(eps=EPS, steps=20, step_size=EPS / 8, **kw)


def test_bpda_backward_is_the_identity_and_forward_exact():
    x = torch.rand(4, 1, 8, 8, requires_grad=True)
    q = BPDA(Quantize(4))
    out = q(x)
    assert torch.equal(out, Quantize(4)(x))
    w = torch.randn_like(x)
    (g,) = torch.autograd.grad((out * w).sum(), x)
    assert torch.equal(g, w)  # d/dx of <w, BPDA(x)> is w: the identity's backward
    # a surrogate's gradient instead: surrogate 2x has backward 2
    s = BPDA(Quantize(4), surrogate=nn.Identity())
    assert torch.equal(s(x), out)


def test_bpda_refuses_a_differentiable_step_and_eot_needs_positive_samples():
    with pytest.raises(ValueError, match="differentiable"):
        BPDA(GaussianNoise(0.1))(torch.rand(2, 1, 8, 8))
    with pytest.raises(ValueError, match="eot_samples"):
        PGD(eps=0.1, eot_samples=0)
    with pytest.raises(ValueError, match="version"):
        AutoAttack(eps=0.1, version="plus-plus")
    with pytest.raises(ValueError, match="levels"):
        Quantize(1)
    with pytest.raises(ValueError, match="sigma"):
        GaussianNoise(0.0)


def test_eot_gradient_is_the_mean_of_sample_gradients():
    torch.manual_seed(0)
    net = nn.Sequential(GaussianNoise(0.3, clamp=False), nn.Flatten(), nn.Linear(16, 3))
    x, y = torch.rand(5, 1, 4, 4), torch.tensor([0, 1, 2, 0, 1])
    torch.manual_seed(1)
    g_eot = input_gradient(net, x, y, cross_entropy_loss, eot_samples=7)
    torch.manual_seed(1)
    singles = [input_gradient(net, x, y, cross_entropy_loss) for _ in range(7)]
    assert torch.allclose(g_eot, torch.stack(singles).mean(0), atol=1e-6)


def test_quantization_looks_robust_to_pgd_until_bpda(digits):
    xtr, ytr, xte, yte = digits
    plain_net = _train(None, xtr, ytr)
    _, undefended = _acc(plain_net, [_pgd(name="pgd")], xte, yte)
    net = _train(Quantize(4), xtr, ytr)
    defended = nn.Sequential(Quantize(4), net).eval()
    rep, plain = _acc(defended, [_pgd(name="pgd"), Square(eps=EPS, n_queries=300, name="square")], xte, yte)
    assert rep.clean_acc > 0.9
    assert plain["pgd"] > 0.85  # zero gradients: PGD cannot move, the defense "looks robust"
    checks = {f.check for f in rep.flags}
    assert {"zero_gradients", "black_box_beats_white_box"} <= checks
    adaptive = nn.Sequential(BPDA(Quantize(4)), net).eval()
    rep_b, bpda = _acc(adaptive, [_pgd(name="pgd_bpda")], xte, yte)
    assert bpda["pgd_bpda"] <= undefended["pgd"] + 0.05
    assert not rep_b.flags


def test_randomised_noise_defense_needs_eot_and_bpda(digits):
    """Noise then quantisation (random dithering): plain PGD sees zero gradients; AutoAttack 'rand'
    and PGD with EOT through BPDA break it down to the undefended model's robust accuracy."""
    xtr, ytr, xte, yte = digits
    plain_net = _train(None, xtr, ytr)
    _, undefended = _acc(plain_net, [_pgd(name="pgd")], xte, yte)
    pre = nn.Sequential(GaussianNoise(0.15), Quantize(4))
    net = _train(pre, xtr, ytr)
    torch.manual_seed(0)
    rep, plain = _acc(nn.Sequential(pre, net).eval(), [_pgd(name="pgd")], xte, yte)
    assert rep.clean_acc > 0.85
    assert plain["pgd"] > 0.75
    assert "zero_gradients" in {f.check for f in rep.flags}
    with torch.no_grad():  # the defense is random: two forwards disagree on some images
        assert (pre(xte) != pre(xte)).any()
    adaptive = nn.Sequential(BPDA(pre, check_differentiable=True), net).eval()
    _, adapt = _acc(adaptive, [_pgd(name="pgd_eot", eot_samples=8),
                               AutoAttack(eps=EPS, version="rand", name="aa_rand")], xte, yte)
    assert adapt["pgd_eot"] <= undefended["pgd"] + 0.1
    assert adapt["aa_rand"] <= undefended["pgd"] + 0.15
