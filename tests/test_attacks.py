"""Properties of the attack engine (lightning_adv.attacks)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_adv.attacks import (
    FGSM,
    PGD,
    L2Threat,
    LinfThreat,
    cross_entropy_loss,
    kl_loss,
    make_threat,
    margin_loss,
    pgd,
)

THREATS = [("linf", 8 / 255), ("l2", 0.5)]


def _norms(delta: torch.Tensor, norm: str) -> torch.Tensor:
    return delta.flatten(1).norm(p=math.inf if norm == "linf" else 2, dim=1)


@pytest.fixture(scope="module")
def digits_model(digits_split):
    """A small MLP trained on scikit-learn digits (real data), with its test split."""
    xtr, ytr, xte, yte = digits_split
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(300):
        opt.zero_grad()
        F.cross_entropy(model(xtr), ytr).backward()
        opt.step()
    model.eval()
    acc = (model(xte).argmax(1) == yte).float().mean().item()
    assert acc > 0.9, acc
    return model, xte, yte


@pytest.mark.parametrize("norm,eps", THREATS)
def test_random_start_inside_ball_and_not_degenerate(norm, eps):
    torch.manual_seed(0)
    threat = make_threat(norm, eps)
    x = torch.rand(64, 1, 8, 8)
    delta = threat.random_init(x)
    n = _norms(delta, norm)
    assert (n <= eps + 1e-6).all()
    # uniform in the ball: far from the centre on average (Linf: nearly eps per coordinate max)
    assert n.mean() > 0.5 * eps


@pytest.mark.parametrize("norm,eps", THREATS)
def test_every_step_inside_ball_and_image(norm, eps, digits_model):
    model, x, y = digits_model
    x, y = x[:64], y[:64]
    threat = make_threat(norm, eps)
    step = 2.5 * eps / 5
    for k in range(0, 6):  # the point after each step count
        torch.manual_seed(1)
        x_adv = pgd(model, x, y, threat, steps=k, step_size=step, loss_fn=cross_entropy_loss)
        delta = x_adv - x
        assert (_norms(delta, norm) <= eps + 1e-5).all(), k
        assert x_adv.min() >= 0 and x_adv.max() <= 1


@pytest.mark.parametrize("norm,eps", THREATS)
def test_projection_properties(norm, eps):
    torch.manual_seed(0)
    threat = make_threat(norm, eps)
    big = torch.randn(16, 3, 4, 4)
    p = threat.project(big)
    assert (_norms(p, norm) <= eps + 1e-6).all()
    # projection is idempotent and leaves points inside the ball alone
    assert torch.allclose(threat.project(p), p)
    small = p * 0.5
    assert torch.allclose(threat.project(small), small)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_eps_zero_returns_input(norm, digits_model):
    model, x, y = digits_model
    x_adv = PGD(eps=0.0, steps=10, step_size=0.1, norm=norm)(model, x[:32], y[:32])
    assert torch.equal(x_adv, x[:32])


@pytest.mark.parametrize("norm,eps", THREATS)
def test_pgd_raises_loss(norm, eps, digits_model):
    model, x, y = digits_model
    torch.manual_seed(0)
    attack = PGD(eps=eps, steps=10, norm=norm)
    x_adv = attack(model, x, y)
    with torch.no_grad():
        clean_loss = cross_entropy_loss(model(x), y)
        adv_loss = cross_entropy_loss(model(x_adv), y)
    assert adv_loss.mean() > 2 * clean_loss.mean()
    assert (adv_loss >= clean_loss - 1e-6).float().mean() >= 0.95


@pytest.mark.parametrize("norm,eps", [("linf", 0.06), ("l2", 0.5)])
def test_restarts_never_break_fewer_examples(norm, eps, digits_model):
    model, x, y = digits_model
    torch.manual_seed(3)
    one = PGD(eps=eps, steps=2, norm=norm, restarts=1)(model, x, y)
    torch.manual_seed(3)
    many = PGD(eps=eps, steps=2, norm=norm, restarts=8)(model, x, y)
    with torch.no_grad():
        fooled_one, fooled_many = model(one).argmax(1) != y, model(many).argmax(1) != y
    assert (fooled_many | ~fooled_one).all()  # restart 0 is the same run: what it broke stays broken
    assert (fooled_many & ~fooled_one).any()  # the extra restarts found something


class _TwoWayModel(nn.Module):
    """Label 0, input summarised by ``s = mean(x) - 0.5``. For ``s < 0`` the logits ``(0, 0.01, -10)``
    misclassify with a small cross-entropy (0.70); for ``s >= 0`` the logits ``(0, -0.001, -0.001)``
    classify correctly with a *higher* one (1.10): the highest-loss restart is not the fooling one."""

    def forward(self, x: Tensor) -> Tensor:
        low = (x.flatten(1).mean(1) < 0.5).float().unsqueeze(1)
        fooled = torch.tensor([[0.0, 0.01, -10.0]])
        correct = torch.tensor([[0.0, -0.001, -0.001]])
        return low * fooled + (1 - low) * correct


def test_restarts_keep_a_fooling_restart_over_a_higher_loss_one():
    """Issue 10: with cross-entropy a restart with lower loss can fool the model while the
    highest-loss restart does not; the returned point must be a fooling one."""
    from lightning_adv.attacks import pgd as pgd_fn, cross_entropy_loss as ce
    from lightning_adv.attacks.threat import LinfThreat

    model = _TwoWayModel()
    x = torch.full((64, 1, 2, 2), 0.5)
    y = torch.zeros(64, dtype=torch.long)
    threat = LinfThreat(0.1)
    # zero steps: each restart is its random start, on either side of 0.5
    runs = []
    torch.manual_seed(0)
    for _ in range(8):  # the 8 random starts restarts=8 draws, in the same order
        x_r = pgd_fn(model, x, y, threat, steps=0, step_size=0.01, loss_fn=ce, restarts=1)
        with torch.no_grad():
            runs.append((ce(model(x_r), y), model(x_r).argmax(1) != y))
    losses, fooled = torch.stack([r[0] for r in runs]), torch.stack([r[1] for r in runs])
    highest = losses.argmax(0)
    some_fool = fooled.any(0)
    old_rule_fails = some_fool & ~fooled.gather(0, highest.view(1, -1)).squeeze(0)
    assert old_rule_fails.sum() >= 32  # the case exists: the highest-loss restart misses a fooling one
    torch.manual_seed(0)
    x_adv = pgd_fn(model, x, y, threat, steps=0, step_size=0.01, loss_fn=ce, restarts=8)
    with torch.no_grad():
        fooled_new = model(x_adv).argmax(1) != y
    # same seed, same 8 random starts (drawn in the same order): every example some restart fooled is fooled
    assert torch.equal(fooled_new, some_fool)


def test_model_mode_and_param_grads_unchanged():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5),
                          nn.Flatten(), nn.Linear(4 * 6 * 6, 10))
    model.eval()
    model[3].train()  # a mixed state that must survive the attack
    model[0].weight.grad = torch.full_like(model[0].weight, 0.123)
    before = {n: m.training for n, m in model.named_modules()}
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,))
    for bn_mode in ("train", "eval", "keep"):
        running = model[1].running_mean.clone()
        PGD(eps=0.1, steps=2, bn_mode=bn_mode)(model, x, y)
        assert {n: m.training for n, m in model.named_modules()} == before
        assert torch.equal(model[0].weight.grad, torch.full_like(model[0].weight, 0.123))
        assert all(p.grad is None for n, p in model.named_parameters() if n != "0.weight")
        # BN statistics move only when the attack runs the model in train mode
        assert torch.equal(model[1].running_mean, running) == (bn_mode != "train")


def test_works_under_no_grad_and_inference_mode(digits_model):
    model, x, y = digits_model
    torch.manual_seed(0)
    ref = PGD(eps=0.1, steps=3, random_start=False)(model, x[:16], y[:16])
    with torch.no_grad():
        a = PGD(eps=0.1, steps=3, random_start=False)(model, x[:16], y[:16])
    with torch.inference_mode():
        xi, yi = x[:16].clone(), y[:16].clone()  # inference tensors, as Lightning test batches are
        b = PGD(eps=0.1, steps=3, random_start=False)(model, xi, yi)
    assert torch.allclose(a, ref) and torch.allclose(b, ref)
    assert not torch.equal(ref, x[:16])


def test_fgsm_is_one_sign_step(digits_model):
    model, x, y = digits_model
    x, y = x[:32], y[:32]
    eps = 0.05
    x_req = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(model(x_req), y, reduction="sum"), x_req)
    expected = (x + eps * g.sign()).clamp(0, 1)
    assert torch.allclose(FGSM(eps=eps)(model, x, y), expected, atol=1e-6)


@pytest.mark.parametrize("norm,eps", [("linf", 0.05), ("l2", 0.5)])
def test_fgsm_is_the_one_step_pgd_configs_wrote_before(norm, eps, digits_model):
    """quickstart's ``fgsm`` was ``PGD(steps: 1, step_size: eps, random_start: false)``: ``FGSM`` gives the
    same points bit for bit, so the same per-example results, and the suite takes the two for one attack."""
    from lightning_adv.callbacks.attack_suite import same_attack

    model, x, y = digits_model
    old = PGD(eps=eps, norm=norm, steps=1, step_size=eps, random_start=False, name="fgsm")
    new = FGSM(eps=eps, norm=norm, name="fgsm")
    a, b = old(model, x, y), new(model, x, y)
    assert torch.equal(a, b)
    assert torch.equal(model(a).argmax(1) == y, model(b).argmax(1) == y)
    assert (model(b).argmax(1) != y).sum() > (model(x).argmax(1) != y).sum()  # the attack does something
    assert same_attack(old, new)
    assert PGD(eps=eps, norm=norm, steps=1, random_start=False).label == FGSM(eps=eps, norm=norm).label


def test_targeted_attack_reaches_target(digits_model):
    model, x, y = digits_model
    x, y = x[:64], y[:64]
    target = (y + 1) % 10
    torch.manual_seed(0)
    x_adv = PGD(eps=0.3, steps=40, step_size=0.02, targeted=True)(model, x, target)
    with torch.no_grad():
        hit = (model(x_adv).argmax(1) == target).float().mean().item()
    assert hit > 0.9


def _reference_pgd_linf(model, x, y, eps, alpha, steps, seed=None):
    """An independent plain-loop PGD (Madry et al.), written without the library."""
    if seed is None:
        xa = x.clone()
    else:
        g = torch.Generator().manual_seed(seed)
        xa = (x + (torch.rand(x.shape, generator=g) * 2 - 1) * eps).clamp(0, 1)
    for _ in range(steps):
        xa = xa.detach().requires_grad_(True)
        loss = F.cross_entropy(model(xa), y)
        (grad,) = torch.autograd.grad(loss, xa)
        xa = xa.detach() + alpha * grad.sign()
        xa = torch.min(torch.max(xa, x - eps), x + eps).clamp(0, 1)
    return xa.detach()


def _acc(model, x, y):
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def test_robust_accuracy_matches_reference_implementation(digits_model):
    model, x, y = digits_model
    eps, alpha, steps = 0.1, 0.01, 20
    # deterministic start: the two implementations must agree
    ref_acc = _acc(model, _reference_pgd_linf(model, x, y, eps, alpha, steps), y)
    our_acc = _acc(model, PGD(eps=eps, steps=steps, step_size=alpha, random_start=False)(model, x, y), y)
    assert abs(our_acc - ref_acc) <= 0.01, (our_acc, ref_acc)
    # random start: different random draws, so compare the mean over 5 seeds
    ref_accs, our_accs = [], []
    for seed in range(5):
        ref_accs.append(_acc(model, _reference_pgd_linf(model, x, y, eps, alpha, steps, seed=100 + seed), y))
        torch.manual_seed(seed)
        our_accs.append(_acc(model, PGD(eps=eps, steps=steps, step_size=alpha)(model, x, y), y))
    ref_mean, our_mean = sum(ref_accs) / 5, sum(our_accs) / 5
    assert abs(our_mean - ref_mean) <= 0.01, (our_accs, ref_accs)
    assert our_mean < _acc(model, x, y) - 0.2  # the attack does something on a natural model


def test_losses_match_torch():
    torch.manual_seed(0)
    logits, other = torch.randn(6, 5), torch.randn(6, 5)
    y = torch.randint(0, 5, (6,))
    p = other.softmax(1)
    expected_kl = F.kl_div(logits.log_softmax(1), p, reduction="none").sum(1)
    assert torch.allclose(kl_loss(logits, p), expected_kl, atol=1e-6)
    assert torch.allclose(cross_entropy_loss(logits, y), F.cross_entropy(logits, y, reduction="none"))
    true = logits[torch.arange(6), y]
    masked = logits.clone()
    masked[torch.arange(6), y] = -1e9
    assert torch.allclose(margin_loss(logits, y), masked.max(1).values - true)


@pytest.mark.parametrize(
    "kwargs,param",
    [
        (dict(eps=-0.1), "eps"),
        (dict(eps=2.0), "eps"),
        (dict(eps=None), "eps"),  # accepted before, then a TypeError in effective_step_size
        (dict(steps=-1), "steps"),
        (dict(step_size=0.0), "step_size"),
        (dict(restarts=0), "restarts"),
        (dict(norm="l7"), "norm"),
        (dict(bn_mode="frozen"), "bn_mode"),
        (dict(loss="hinge"), "loss"),
        (dict(name="a/b"), "name"),
    ],
)
def test_bad_attack_config_names_parameter(kwargs, param):
    with pytest.raises(ValueError, match=param):
        PGD(**kwargs)


def test_threat_classes_and_labels():
    assert isinstance(make_threat("Linf", 0.1), LinfThreat)
    assert isinstance(make_threat("l2", 3.0), L2Threat)  # L2 radii above 1 are legitimate
    assert PGD(eps=8 / 255, steps=20).label == "pgd20_linf_eps8"
    assert FGSM(eps=8 / 255).label == "fgsm_linf_eps8"
    assert PGD(eps=0.5, norm="l2", steps=10, restarts=3).label == "pgd10_l2_eps0.5_r3"
    assert math.isclose(PGD(eps=8 / 255, steps=10).effective_step_size, 2 / 255)
