"""Certified accuracy is computed in fp32 whatever the precision of the caller (issue 20).

Under bf16 autocast a bound computed in bf16 rounds the logits by about 2^-8 of their size, so an
example whose true (fp32) margin is slightly negative can get a positive "certified" lower bound:
a certificate of a misclassified point. The inputs here sit on decision boundaries (found by
bisection in fp32), where that rounding decides; the reported bounds must equal the fp32 ones.
"""
from __future__ import annotations

import pytest
import torch
from lightning.pytorch import Trainer
from torch.utils.data import DataLoader, TensorDataset

from lightning_adv.attacks import PGD, AttackSuite
from lightning_adv.certify import BoundNetwork, Certify, certified, margin_lower_bound
from lightning_adv.modules import CertifiedTraining

torch.set_num_threads(1)
EPS = 1e-8  # a ball small enough that the fp32 bound keeps the sign of the fp32 margin (about 1e-6 here)


def _boundary_points(model: torch.nn.Module, x: torch.Tensor, n: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` points within fp32 rounding of a decision boundary of ``model``, each labelled with the class of
    one side, alternately the side it lies on (margin > 0) and the other (margin < 0)."""
    with torch.no_grad():
        pred = model(x).argmax(1)
        pts, labels = [], []
        for i in range(x.shape[0]):
            j = int((pred != pred[i]).nonzero()[0]) if (pred != pred[i]).any() else None
            if j is None:
                continue
            lo, hi = 0.0, 1.0  # class pred[i] at lo, another class at hi
            for _ in range(20):  # margins of about 1e-6: far above fp32 rounding, far below bf16's
                mid = (lo + hi) / 2
                same = int(model(((1 - mid) * x[i] + mid * x[j])[None]).argmax()) == int(pred[i])
                lo, hi = (mid, hi) if same else (lo, mid)
            t = lo if len(pts) % 2 == 0 else hi
            pts.append(((1 - t) * x[i] + t * x[j]).clamp(0, 1))
            labels.append(pred[i])
            if len(pts) == n:
                break
    return torch.stack(pts), torch.stack(labels)


@pytest.fixture(scope="module")
def boundary(digits_split):
    torch.manual_seed(0)
    module = CertifiedTraining(arch="small_cnn", arch_kwargs={"width": 4}, eval_eps=EPS, eval_method="ibp")
    model = module.model
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(40):  # a few clean steps: predictions of several classes, hence decision boundaries
        loss = torch.nn.functional.cross_entropy(model(digits_split[0][:256]), digits_split[1][:256])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    x, y = _boundary_points(model, digits_split[2][:200])
    with torch.no_grad():
        z = model(x)
        margin = z.gather(1, y[:, None]) - z
    truly_correct = certified(margin, y)  # fp32 margins at the points themselves
    assert 10 <= int(truly_correct.sum()) <= 38  # both sides of the boundaries are there
    return module, x, y, truly_correct


@pytest.mark.parametrize("method", ["ibp", "crown-ibp", "crown"])
def test_bounds_are_fp32_under_bf16_autocast(boundary, method):
    module, x, y, truly_correct = boundary
    net = BoundNetwork(module.model)
    ref = margin_lower_bound(net, x, y, EPS, method)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = margin_lower_bound(net, x, y, EPS, method)
        cert = Certify(method=method, eps=EPS).certify(module.model, x, y)
    assert got.dtype == torch.float32 and torch.equal(got, ref)
    assert torch.equal(cert, certified(ref, y))
    assert not (cert & ~truly_correct).any()  # never a certificate for a point the fp32 model gets wrong


def test_suite_certified_rows_are_fp32_in_autocast_mode(boundary):
    module, x, y, _ = boundary
    attacks = [PGD(eps=EPS, steps=2, step_size=EPS, name="pgd"), Certify(method="ibp", eps=EPS, name="ibp")]
    ref = AttackSuite(attacks, cascade=False).evaluate(module.model, x, y)[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = AttackSuite(attacks, cascade=False, precision="autocast").evaluate(module.model, x, y)[0]
    row = lambda report: next(r for r in report.rows if r.name == "ibp")  # noqa: E731
    # autocast mode attacks only what the bf16 forward classifies correctly: never more certified than fp32
    assert row(ref).robust_acc >= 0.3 and row(got).robust_acc <= row(ref).robust_acc


def test_certified_training_test_metric_is_fp32_under_bf16_mixed(boundary, tmp_path):
    module, x, y, truly_correct = boundary
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    got = {}
    for precision in ("32-true", "bf16-mixed"):
        trainer = Trainer(accelerator="cpu", devices=1, precision=precision, logger=False, enable_progress_bar=False,
                          enable_checkpointing=False, enable_model_summary=False, default_root_dir=tmp_path)
        got[precision] = trainer.test(module, dataloaders=loader, verbose=False)[0]["test/certified_acc"]
    expected = float(certified(margin_lower_bound(BoundNetwork(module.model), x, y, EPS, "ibp"), y).float().mean())
    assert 0.3 <= expected <= float(truly_correct.float().mean())
    assert got["32-true"] == pytest.approx(expected, abs=1e-6)
    assert got["bf16-mixed"] == pytest.approx(expected, abs=1e-6)
