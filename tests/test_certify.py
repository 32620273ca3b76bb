"""Certified bounds: soundness (sampled points, PGD points, exact MILP minima on tiny nets),
CROWN vs IBP tightness, the front end's errors, the certified row of the suite and its
soundness flag, the certified training loss and schedules."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import LinearConstraint, milp
from torch import nn

from lightning_adv.attacks import PGD, AttackSuite
from lightning_adv.certify import (BoundNetwork, Certify, certified, certified_loss, crown_margin, ibp_margin,
                                   interval_bounds, margin_lower_bound, ramp)
from lightning_adv.certify.network import AffineOp, ReLUOp
from lightning_adv.models import create_model
from lightning_adv.models.normalize import Normalize

torch.set_num_threads(1)


def _nets():
    """Random small networks covering every supported layer type (double precision, eval mode)."""
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(3)
    bn.running_mean.uniform_(-0.5, 0.5), bn.running_var.uniform_(0.5, 2.0), bn.weight.data.uniform_(0.5, 1.5)
    seq = nn.Sequential(Normalize([0.4], [0.3]), nn.Conv2d(1, 3, 3, padding=1), bn, nn.ReLU(), nn.AvgPool2d(2),
                        nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(16, 3))
    return {
        "small_cnn": create_model("small_cnn", num_classes=4, in_channels=1, width=2, mean=[0.5], std=[0.25]),
        "mlp": create_model("mlp", input_size=8, num_classes=4, in_channels=1, hidden=[12, 12]),
        "convnet6": create_model("convnet6", num_classes=3, in_channels=1, width=2),
        "bn_avgpool_seq": seq,
    }


def _pgd_margin(model, x, y, eps, norm):
    x_adv = PGD(eps=eps, steps=30, step_size=eps / 6, norm=norm, restarts=2, loss="margin")(model, x, y)
    z = model(x_adv)
    return z.gather(1, y[:, None]) - z


@pytest.mark.parametrize("name", ["small_cnn", "mlp", "convnet6", "bn_avgpool_seq"])
def test_bounds_below_sampled_and_pgd_margins(name):
    model = _nets()[name].double().eval()
    net = BoundNetwork(model)
    torch.manual_seed(1)
    x = torch.rand(6, 1, 8, 8, dtype=torch.float64)
    y = model(x).argmax(1)
    for norm, eps, methods in (("linf", 0.03, ("ibp", "crown-ibp", "crown")), ("l2", 0.3, ("crown",))):
        bounds = {m: margin_lower_bound(net, x, y, eps, m, norm) for m in methods}
        worst = _pgd_margin(model, x, y, eps, norm)
        for _ in range(30):
            d = torch.rand_like(x) * 2 - 1
            if norm == "l2":
                d = d / d.flatten(1).norm(dim=1).view(-1, 1, 1, 1) * eps * torch.rand(6, 1, 1, 1, dtype=x.dtype)
            z = model((x + d * (eps if norm == "linf" else 1)).clamp(0, 1))
            worst = torch.minimum(worst, z.gather(1, y[:, None]) - z)
        for m, b in bounds.items():
            assert (b <= worst + 1e-9).all(), f"{name} {norm} {m}: bound above a reachable margin"
            assert torch.isfinite(b).all()
    # at eps 0 every bound is the margin itself
    z = model(x)
    for m in ("ibp", "crown-ibp", "crown"):
        torch.testing.assert_close(margin_lower_bound(net, x, y, 0.0, m), z.gather(1, y[:, None]) - z)


def _dense(ops, shapes, start, stop):
    """The composed affine ops ``start..stop-1`` as a dense matrix and offset (double)."""
    n = int(np.prod(shapes[start]))
    basis = torch.cat([torch.zeros(1, n), torch.eye(n)]).double().view(n + 1, *shapes[start])
    with torch.no_grad():
        for op in ops[start:stop]:
            basis = op.forward(basis)
    out = basis.reshape(n + 1, -1)
    return (out[1:] - out[0]).T.numpy(), out[0].numpy()


def milp_min_margins(model, x0, y, eps):
    """Exact ``min z_y - z_j`` over the Linf ball ∩ [0, 1] by a MILP (ReLU big-M with IBP's bounds)."""
    net = BoundNetwork(model)
    x = x0[None].double()
    ops, shapes = net.ops(x)
    with torch.no_grad():
        boxes = [(lo[0].flatten().numpy(), hi[0].flatten().numpy()) for lo, hi in interval_bounds(ops, x, eps)]
    lb, ub, integ, rows = list(boxes[0][0]), list(boxes[0][1]), [0] * len(boxes[0][0]), []
    cur = list(range(len(lb)))

    def new(lo, hi, integer=0):
        lb.extend(lo), ub.extend(hi), integ.extend([integer] * len(lo))
        return list(range(len(lb) - len(lo), len(lb)))

    i = 0
    while i < len(ops):
        if isinstance(ops[i], AffineOp):
            j = i
            while j < len(ops) and isinstance(ops[j], AffineOp):
                j += 1
            W, b = _dense(ops, shapes, i, j)
            out = new(boxes[j][0] - 1e-6, boxes[j][1] + 1e-6)
            for r in range(W.shape[0]):  # z_r - W_r v = b_r
                rows.append(({out[r]: 1.0, **{cur[c]: -W[r, c] for c in np.nonzero(W[r])[0]}}, b[r], b[r]))
            cur, i = out, j
            continue
        assert isinstance(ops[i], ReLUOp)
        lo, hi = boxes[i]
        act, gate = new(np.maximum(lo, 0), np.maximum(hi, 0)), new(np.zeros(len(lo)), np.ones(len(lo)), 1)
        for r, (z, a, d) in enumerate(zip(cur, act, gate)):
            rows.append(({a: 1.0, z: -1.0}, 0.0, np.inf))  # a >= z
            rows.append(({a: 1.0, d: -max(hi[r], 0)}, -np.inf, 0.0))  # a <= u d
            rows.append(({a: 1.0, z: -1.0, d: -min(lo[r], 0)}, -np.inf, -min(lo[r], 0)))  # a <= z - l (1 - d)
        cur, i = act, i + 1
    A = np.zeros((len(rows), len(lb)))
    for r, (coef, _, _) in enumerate(rows):
        for c, v in coef.items():
            A[r, c] += v
    cons = LinearConstraint(A, [r[1] for r in rows], [r[2] for r in rows])
    result = []
    for j in range(len(cur)):
        c = np.zeros(len(lb))
        c[cur[y]] += 1.0
        c[cur[j]] -= 1.0
        res = milp(c, constraints=cons, integrality=np.array(integ), bounds=(lb, ub),
                   options={"mip_rel_gap": 1e-9})
        assert res.status == 0, res.message
        result.append(res.fun)
    return torch.tensor(result, dtype=torch.float64)


@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_bounds_never_above_the_exact_milp_minimum(kind):
    torch.manual_seed(3 if kind == "mlp" else 4)
    if kind == "mlp":
        model = nn.Sequential(nn.Flatten(), nn.Linear(9, 8), nn.ReLU(), nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3))
    else:
        model = nn.Sequential(Normalize([0.5], [0.5]), nn.Conv2d(1, 2, 2), nn.ReLU(), nn.Flatten(), nn.Linear(8, 5),
                              nn.ReLU(), nn.Linear(5, 3))
    model = model.double().eval()
    net = BoundNetwork(model)
    x = torch.rand(5, 1, 3, 3, dtype=torch.float64)
    y = model(x).argmax(1)
    gaps = []
    for eps in (0.02, 0.1):
        bounds = {m: margin_lower_bound(net, x, y, eps, m).detach() for m in ("ibp", "crown-ibp", "crown")}
        for n in range(x.shape[0]):
            exact = milp_min_margins(model, x[n], int(y[n]), eps)
            for m, b in bounds.items():
                assert (b[n] <= exact + 1e-7).all(), f"{m} above the MILP minimum at eps {eps}"
            assert (bounds["crown"][n] >= bounds["ibp"][n] - 1e-9).all()
            gaps.append(float((exact - bounds["crown"][n]).max()))
    assert min(gaps) < 1e-6  # where no neuron is unstable CROWN is exact, not merely below


def test_crown_at_least_as_tight_as_ibp_on_random_nets():
    looser = total = 0
    for seed in range(5):
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Flatten(), nn.Linear(16, 20), nn.ReLU(), nn.Linear(20, 20), nn.ReLU(),
                              nn.Linear(20, 4)).double()
        net = BoundNetwork(model)
        x = torch.rand(16, 1, 4, 4, dtype=torch.float64)
        y = model(x).argmax(1)
        for eps in (0.01, 0.05, 0.2):
            ibp, crown = ibp_margin(net, x, y, eps), crown_margin(net, x, y, eps)
            looser += int((crown < ibp - 1e-9).sum())
            total += ibp.numel()
            assert float((crown - ibp).detach().mean()) > 0
    assert looser == 0, f"CROWN looser than IBP on {looser} of {total} margins"


# ----------------------------------------------------------------- bad input
@pytest.mark.parametrize(("model", "needle"), [
    (lambda: create_model("mlp", input_size=8, in_channels=1, activation="tanh"), "layers.2 (Tanh)"),
    (lambda: create_model("resnet18", num_classes=10), "<model> (ResNet18)"),
    (lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 4), nn.Sigmoid()), "2 (Sigmoid)"),
])
def test_unsupported_layers_are_named(model, needle):
    with pytest.raises(ValueError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        BoundNetwork(model())


def test_bad_values_are_named():
    model = create_model("small_cnn", in_channels=1, width=2).eval()
    net = BoundNetwork(model)
    x, y = torch.rand(2, 1, 8, 8), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="eps must be a finite number >= 0, got eps=-0.1"):
        ibp_margin(net, x, y, -0.1)
    with pytest.raises(ValueError, match="IBP bounds the Linf ball only"):
        ibp_margin(net, x, y, 0.1, norm="l2")
    with pytest.raises(ValueError, match=r"images in \[0, 1\]"):
        crown_margin(net, x * 255, y, 0.1)
    with pytest.raises(ValueError, match="Certify.eps must be a finite number >= 0"):
        Certify(eps=-1.0)
    with pytest.raises(ValueError, match="method='nope'"):
        Certify(method="nope")
    with pytest.raises(ValueError, match="use method='crown' for L2"):
        Certify(method="ibp", norm="l2", eps=0.5)
    bn = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(72, 3)).train()
    with pytest.raises(ValueError, match=r"layer 1 \(BatchNorm2d\) is in train mode"):
        ibp_margin(BoundNetwork(bn), x, y, 0.1)
    with pytest.raises(ValueError, match="does not reproduce its forward"):
        class Skip(nn.Sequential):
            def forward(self, x):
                return super().forward(x) + 1.0
        BoundNetwork(nn.Sequential(Skip(nn.Flatten(), nn.Linear(64, 3)))).ops(x)
    with pytest.raises(ValueError, match="is a certificate, not an attack"):
        Certify(eps=0.1)(model, x, y)


# ----------------------------------------------------------------- suite row
class _ClaimsEverything(Certify):
    """A broken certifier: certifies every example (to prove the soundness flag fires)."""

    def certify(self, model, x, y, mode_module=None):
        return torch.ones(x.shape[0], dtype=torch.bool)


def test_suite_certified_row_flags_unsound_certificates(digits_split):
    _, _, x, y = digits_split
    torch.manual_seed(0)
    model = create_model("mlp", input_size=8, in_channels=1, hidden=[32]).eval()
    x, y = x[:48], model(x[:48]).argmax(1)
    assert len(set(y.tolist())) > 2  # clean accuracy 100% w.r.t. these labels
    pgd = PGD(eps=0.1, steps=10, step_size=0.025, name="pgd10")
    suite = AttackSuite([pgd, Certify(method="crown-ibp", eps=0.1, name="cert"), Certify(method="crown", eps=0.002,
                                                                                       name="cert_small")],
                        cascade=True)
    report, records = suite.evaluate(model, x, y, batch_size=16)
    assert [r.name for r in report.rows] == ["pgd10", "cert", "cert_small"]
    assert not [f for f in report.flags if f.check == "certified_but_broken"]
    rows = {r.name: r for r in report.rows}
    assert rows["cert"].kind == "certified" and records["cert/ran"].all()  # outside the cascade
    assert rows["cert"].robust_acc <= rows["pgd10"].robust_acc  # lower bound <= upper bound
    assert 0 < rows["cert_small"].robust_acc  # a small ball is certified somewhere
    assert report.worst_case_acc == pytest.approx(rows["pgd10"].robust_acc)  # certificates not in the worst case
    assert any("certified: cert proves" in n for n in report.notes)
    strong = PGD(eps=0.5, steps=20, step_size=0.05, name="pgd20")
    broken = AttackSuite([strong, _ClaimsEverything(eps=0.5, name="liar")], cascade=False)
    with pytest.warns(UserWarning, match="certified_but_broken"):
        bad = broken.evaluate(model, x, y, batch_size=48)[0]
    flag = next(f for f in bad.flags if f.check == "certified_but_broken")
    assert bad.rows[0].robust_acc < 1
    assert flag.value == pytest.approx(1 - bad.rows[0].robust_acc) and "liar vs pgd20" in flag.message


# ----------------------------------------------------------------- training loss
def test_certified_loss_and_schedules():
    assert [ramp(s, 10, 20, 0.0, 0.3) for s in (0, 9, 10, 20, 30, 99)] == pytest.approx([0, 0, 0, 0.15, 0.3, 0.3])
    model = create_model("small_cnn", in_channels=1, width=2)
    net = BoundNetwork(model)
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,))
    logits = model(x)
    clean, _, _ = certified_loss(net, x, y, logits, 0.0, 0.5)
    assert float(clean) == pytest.approx(float(torch.nn.functional.cross_entropy(logits, y)))
    loss, robust, margin = certified_loss(net, x, y, logits, 0.1, 0.5, "crown-ibp", beta=0.5)
    assert float(robust) >= float(clean) and float(loss) == pytest.approx(0.5 * float(clean) + 0.5 * float(robust),
                                                                          rel=1e-5)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert not certified(margin, y).any() or certified(margin, y).float().mean() <= 1
    with pytest.raises(ValueError, match="kappa must be in"):
        certified_loss(net, x, y, logits, 0.1, 1.5)
    with pytest.raises(ValueError, match="method='pgd'"):
        certified_loss(net, x, y, logits, 0.1, 0.5, "pgd")


def _conv_nets():
    torch.manual_seed(3)
    seq = nn.Sequential(Normalize([0.4, 0.5], [0.3, 0.2]), nn.Conv2d(2, 4, 3, 1, 1), nn.ReLU(),
                        nn.Conv2d(4, 6, 4, 2, 1), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 5, 3, 1, 2), nn.ReLU(),
                        nn.Conv2d(5, 4, 3, 2, 0), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 3 * 3, 9), nn.ReLU(),
                        nn.Linear(9, 5))
    seq[4].running_mean.uniform_(-0.2, 0.2)
    seq[4].running_var.uniform_(0.5, 2.0)
    gowal_small = nn.Sequential(nn.Conv2d(2, 8, 4, 2), nn.ReLU(), nn.Conv2d(8, 8, 4, 1), nn.ReLU(), nn.Flatten(),
                                nn.Linear(8 * 2 * 2, 10), nn.ReLU(), nn.Linear(10, 5))
    return {"seq": seq, "gowal_small": gowal_small,
            "small_cnn": create_model("small_cnn", in_channels=2, width=2, num_classes=5)}


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("name", ["seq", "gowal_small", "small_cnn"])
def test_patch_crown_equals_dense_crown(name, norm, monkeypatch):
    """Full CROWN's patches (intermediate bounds after a convolution) give the bounds of the dense walk."""
    import lightning_adv.certify.crown as crown
    import lightning_adv.certify.patches as patches

    model = _conv_nets()[name].eval()
    torch.manual_seed(4)
    x, y = torch.rand(3, 2, 12, 12), torch.randint(0, 5, (3,))
    eps = 0.03 if norm == "linf" else 0.3
    calls = []
    fast = patches.patch_neuron_bounds
    monkeypatch.setattr(crown, "patch_neuron_bounds", lambda *a, **k: calls.append(1) or fast(*a, **k))
    with torch.no_grad():
        new = crown_margin(BoundNetwork(model), x, y, eps, norm)
        assert calls, "the patch walk was not used"
        monkeypatch.setattr(crown, "patchable", lambda op: False)  # the dense walk of every row (the old code)
        old = crown_margin(BoundNetwork(model), x, y, eps, norm)
    assert torch.isfinite(new).all() and (new - old).abs().max() <= 1e-5 * (1 + old.abs().max())
