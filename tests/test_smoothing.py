"""Randomized smoothing: Clopper-Pearson against scipy, closed-form radii, abstention, bad input;
Gaussian-noise training of Classifier; CertifiedTraining's arguments and schedules."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from lightning_adv.certify import ABSTAIN, clopper_pearson_lower, smoothing_certify, smoothing_predict
from lightning_adv.modules import CertifiedTraining, Classifier

torch.set_num_threads(1)


def test_clopper_pearson_matches_scipy_exact_interval():
    n, alpha = 200, 0.01
    ks = np.array([0, 1, 37, 100, 199, 200])
    ours = clopper_pearson_lower(ks, n, alpha)
    # one-sided (1 - alpha) lower bound = lower end of the two-sided (1 - 2 alpha) exact interval
    ref = [stats.binomtest(int(k), n).proportion_ci(confidence_level=1 - 2 * alpha, method="exact").low for k in ks]
    np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-12)


class _Linear(nn.Module):
    """Two classes split by the hyperplane w.x + b = 0 (class 1 on the positive side)."""

    def __init__(self, w: torch.Tensor, b: float) -> None:
        super().__init__()
        self.w, self.b = w, b

    def forward(self, x):
        s = x.flatten(1) @ self.w.flatten() + self.b
        return torch.stack([-s, s], 1)


def test_certified_radius_of_a_constant_and_a_linear_classifier():
    torch.manual_seed(0)
    x = torch.rand(4, 1, 3, 3)
    sigma, n, alpha = 0.5, 2000, 0.001
    const = lambda z: torch.zeros(z.shape[0], 3).index_fill_(1, torch.tensor([2]), 1.0)  # noqa: E731
    res = smoothing_certify(const, x, 3, sigma, n0=10, n=n, alpha=alpha)
    assert (res.prediction == 2).all()
    # nA = n: the Clopper-Pearson bound is alpha^(1/n), the radius sigma * Phi^-1 of it
    torch.testing.assert_close(res.radius, torch.full((4,), sigma * stats.norm.ppf(alpha ** (1 / n))).float())
    w = torch.randn(9)
    model = _Linear(w, 0.0)
    b = -(x.flatten(1) @ w) + torch.tensor([0.1, 0.3, -0.4, 0.0]) * w.norm()  # signed distances 0.1, 0.3, -0.4, 0
    dist = torch.tensor([0.1, 0.3, 0.4, 0.0])
    for i in range(4):
        model.b = float(b[i])
        r = smoothing_certify(model, x[i:i + 1], 2, 0.25, n0=200, n=4000, alpha=alpha)
        if i == 3:  # on the boundary pA = 1/2: abstain
            assert int(r.prediction) == ABSTAIN and float(r.radius) == 0
            assert int(smoothing_predict(model, x[i:i + 1], 2, 0.25, n=400, alpha=alpha)) == ABSTAIN
            continue
        assert int(r.prediction) == (1 if i < 2 else 0)
        # the exact radius of the smoothed linear classifier is the distance to the hyperplane
        assert float(r.radius) <= dist[i] + 1e-6 and float(r.radius) >= dist[i] - 0.06
        assert int(smoothing_predict(model, x[i:i + 1], 2, 0.25, n=400, alpha=alpha)) == (1 if i < 2 else 0)
    assert res.certified_correct(torch.full((4,), 2), 0.5).all()


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"sigma": 0.0}, "sigma must be a finite number > 0"), ({"sigma": -1.0}, "sigma=-1.0"),
    ({"alpha": 1.0}, "alpha must be a finite number > 0 and < 1"),
    ({"alpha": 0.0}, "alpha=0.0"), ({"n0": 200, "n": 100}, "n0=200"), ({"n": 0}, "n must be an integer"),
])
def test_smoothing_bad_input(kwargs, needle):
    args = {"sigma": 0.25, "n0": 10, "n": 100, "alpha": 0.001, **kwargs}
    with pytest.raises(ValueError, match=needle):
        smoothing_certify(lambda z: torch.zeros(z.shape[0], 2), torch.rand(1, 1, 2, 2), 2, **args)


def test_noise_sigma_trains_on_noisy_inputs():
    with pytest.raises(ValueError, match="noise_sigma must be a finite number >= 0"):
        Classifier(arch="mlp", in_channels=1, arch_kwargs={"input_size": 4}, noise_sigma=-0.1)
    assert "noise_sigma" not in CertifiedTraining(arch="mlp", in_channels=1, arch_kwargs={"input_size": 4}).hparams
    m = Classifier(arch="mlp", in_channels=1, arch_kwargs={"input_size": 4}, noise_sigma=0.5)
    assert m.hparams.noise_sigma == 0.5
    seen = []
    m.model.register_forward_pre_hook(lambda mod, inp: seen.append(inp[0].clone()))
    m.log = lambda *a, **k: None  # noqa: E731
    m._log_clean_acc = lambda *a, **k: None  # noqa: E731
    x = torch.full((64, 1, 4, 4), 0.5)
    m.training_step((x, torch.zeros(64, dtype=torch.long)), 0)
    assert float((seen[0] - x).std()) == pytest.approx(0.5, rel=0.1)


def test_certified_training_arguments_and_schedule():
    from lightning_adv.objectives import CROWNIBP, IBP, PGDAT

    m = CertifiedTraining(arch="small_cnn", in_channels=1, arch_kwargs={"width": 2},
                          objective=CROWNIBP(eps=0.3, warmup_steps=10, ramp_steps=20, kappa_end=0.5))
    assert m.schedule(0) == (0.0, 1.0, 1.0)
    assert m.schedule(20) == pytest.approx((0.15, 0.75, 0.5))
    assert m.schedule(100) == pytest.approx((0.3, 0.5, 0.0))
    assert m.eval_eps == pytest.approx(0.3)
    assert m.hparams["objective"]["class_path"].endswith("CROWNIBP")
    bad = (({"objective": {"class_path": "lightning_adv.objectives.PGD"}}, "not an objective"),
           ({"objective": IBP(eps=0.1), "eval_method": "x"}, "eval_method='x'"),
           ({"objective": PGDAT()}, "eval_eps is needed"),
           ({"arch": "resnet18"}, "unsupported layer"))
    for kwargs, needle in bad:
        with pytest.raises(ValueError, match=needle):
            CertifiedTraining(**{"arch": "small_cnn", "in_channels": 1, **kwargs})
    for kwargs, needle in (({"eps": -0.1}, "eps"), ({"eps": 0.0}, "radius > 0"), ({"kappa_end": 1.5}, "kappa_end"),
                           ({"ramp_steps": -1}, "ramp_steps")):
        with pytest.raises(ValueError, match=needle):
            IBP(**kwargs)
    with pytest.raises(ValueError, match="beta_end"):
        CROWNIBP(beta_end=2.0)
    # any classifier module takes the objective; unsupported layers fail before training there too
    from lightning_adv.modules import AdvTraining
    with pytest.raises(ValueError, match="unsupported layer"):
        AdvTraining(arch="resnet18", in_channels=3, objective=IBP())

def test_smoothing_curve_files_schema_and_monotone(tmp_path):
    """The callback's curve files have the documented schema; the curve never rises with the radius; the
    merge script reads them back (accuracy at a radius recomputed from the per-example radii)."""
    import csv
    import json
    import sys

    from lightning_adv.callbacks import SmoothingCertification
    from lightning_adv.callbacks.smoothing import write_smoothing_curve

    torch.manual_seed(0)
    w = torch.zeros(1, 3, 3)
    w[0, 1, 1] = 1.0
    x = torch.rand(40, 1, 3, 3)
    x[:, 0, 1, 1] = torch.linspace(-1.5, 1.5, 40)  # distances 0 .. 1.5 to the boundary: a spread of radii
    y = (x[:, 0, 1, 1] > 0).long()
    y[:5] = 1 - y[:5]  # a few wrong labels
    cb = SmoothingCertification(sigma=0.5, n0=20, n=300, radii=[0.0, 0.5, 1.0], limit_examples=40, curve_step=0.1)
    res = smoothing_certify(_Linear(w, 0.0), x, 2, cb.sigma, cb.n0, cb.n, cb.alpha)
    data = cb.curve_data(res, y)
    paths = write_smoothing_curve(data, str(tmp_path / "run"))
    assert [p.rsplit(".", 1)[-1] for p in paths] == ["json", "csv", "png"]
    loaded = json.loads((tmp_path / "run" / "smoothing_curve.json").read_text())
    assert {"method", "sigma", "n0", "n", "alpha", "examples", "abstain", "checkpoint", "radii", "certified_acc",
            "at", "per_example"} <= set(loaded)
    assert loaded["method"] == "randomized_smoothing" and loaded["examples"] == 40 and loaded["n"] == 300
    assert set(loaded["per_example"]) == {"label", "prediction", "radius"}
    acc, radii = loaded["certified_acc"], loaded["radii"]
    assert radii == sorted(radii) and radii[0] == 0.0 and radii[-1] >= max(loaded["per_example"]["radius"])
    assert all(a >= b for a, b in zip(acc, acc[1:])) and acc[0] > acc[-1] == 0.0
    assert 0.0 < acc[0] <= 35 / 40  # the five wrong labels are never certified correct
    assert loaded["at"]["0.5"] == acc[radii.index(0.5)]
    rows = list(csv.reader(open(tmp_path / "run" / "smoothing_curve.csv")))
    assert rows[0] == ["radius", "certified_acc"] and len(rows) == len(radii) + 1
    assert open(paths[2], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1] / "scripts"))
    import smoothing_curve

    smoothing_curve.main([paths[0], paths[0], "--out", str(tmp_path / "merged"), "--radii", "0", "0.5", "1"])
    merged = list(csv.DictReader(open(tmp_path / "merged.csv")))
    assert [float(r["sigma_0.5"]) for r in merged] == pytest.approx([acc[radii.index(r)] for r in (0.0, 0.5, 1.0)])
