"""Pre-processing defenses of thesis section 5.5: DefenseGAN's projection, wavelet denoising, the SR
defense, BPDA through them, the defense-unaware attack, training checkpoints and bad input."""
from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from helpers import quiet_trainer
from lightning_adv.attacks import PGD, AttackSuite
from lightning_adv.defenses import (DefenseGAN, Generator, Purified, PurifierUnaware, SRDefense, SRResNet,
                                    WaveletDenoise, adaptive_purifier, load_generator, load_sr_net, wavelet_denoise)
from lightning_adv.modules import AdversarialQuerying, GANTraining, PurifiedFewShot, SRTraining
from lightning_adv.meta import HeadLearner
from lightning_adv.objectives import MetaNatural


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _generator(seed: int = 0, image_size: int = 12, latent_dim: int = 8) -> Generator:
    torch.manual_seed(seed)
    return Generator(latent_dim=latent_dim, image_size=image_size, in_channels=1, width=8).eval()


def _smooth_images(digits_split, size: int = 32) -> torch.Tensor:
    """Real digits, bilinearly upsampled: clean images with little high-frequency content."""
    return F.interpolate(digits_split[0][:16], size=size, mode="bilinear", align_corners=False).clamp(0, 1)


# ------------------------------------------------------------------ DefenseGAN's projection
def test_projection_lowers_the_reconstruction_error_nearly_monotonically():
    torch.manual_seed(0)
    # a smooth generator with outputs that vary with z (an untrained DCGAN barely does)
    g = nn.Sequential(nn.Linear(8, 64), nn.Tanh(), nn.Linear(64, 144), nn.Sigmoid(), nn.Unflatten(1, (1, 12, 12)))
    with torch.no_grad():
        for m in g:
            if isinstance(m, nn.Linear):
                m.weight.mul_(3.0)
        x = g(torch.randn(8, 8))  # images in the generator's range: the projection can reach them
    proj = DefenseGAN(g, latent_dim=8, restarts=3, steps=150, lr=10.0)
    out, err, hist = proj.project(x, history=True)
    mean = hist.mean(1)
    assert hist.shape == (151, 8)
    assert float(mean[-1]) < 0.1 * float(mean[0]), (float(mean[0]), float(mean[-1]))
    # momentum may overshoot a little, but the error of the best restart never climbs by more than 5%
    assert bool((mean[1:] <= mean[:-1] * 1.05).all())
    # the returned image is G(z*) of the best restart, and its error is what is reported
    assert torch.allclose((out - x).pow(2).flatten(1).mean(1), err, atol=1e-6)
    assert float(err.mean()) <= float(hist[-1].mean()) + 1e-6


def test_projection_touches_no_parameter_gradient_and_works_under_inference_mode():
    g = _generator()
    proj = DefenseGAN(g, restarts=2, steps=5)
    with torch.inference_mode():
        out = proj(torch.rand(2, 1, 12, 12))
    assert out.shape == (2, 1, 12, 12) and 0 <= float(out.min()) and float(out.max()) <= 1
    assert all(p.grad is None for p in g.parameters())


# ------------------------------------------------------------------ wavelet denoising
@pytest.mark.parametrize("channels", [1, 3])
def test_wavelet_denoising_changes_a_clean_image_less_than_a_noisy_one(digits_split, channels):
    clean = _smooth_images(digits_split).repeat(1, channels, 1, 1)
    if channels == 3:  # give the colour channels different content
        clean = torch.cat([clean[:, :1], clean[:, 1:2].flip(-1), clean[:, 2:].flip(-2)], 1)
    torch.manual_seed(0)
    noisy = (clean + 0.1 * torch.randn_like(clean)).clamp(0, 1)
    den = WaveletDenoise(sigma=None)  # estimated sigma: the method must see the noise itself
    change_clean = (den(clean) - clean).flatten(1).norm(dim=1)
    change_noisy = (den(noisy) - noisy).flatten(1).norm(dim=1)
    assert bool((change_clean < change_noisy).all()), (change_clean, change_noisy)
    # and it denoises: closer to the clean image than the noisy input was
    assert float((den(noisy) - clean).norm()) < float((noisy - clean).norm())


def test_wavelet_methods_and_the_authors_setting_run(digits_split):
    x = _smooth_images(digits_split, 28)
    for method in ("BayesShrink", "VisuShrink"):
        for mode in ("soft", "hard"):
            out = wavelet_denoise(x, "db2", method, mode, sigma=0.04)
            assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    # VisuShrink's universal threshold is larger than BayesShrink's on clean images: it smooths more
    bayes = wavelet_denoise(x, "db1", "BayesShrink", "soft", 0.04)
    visu = wavelet_denoise(x, "db1", "VisuShrink", "soft", 0.04)
    assert float((visu - x).norm()) > float((bayes - x).norm())


# ------------------------------------------------------------------ BPDA through the purifiers
def test_bpda_backward_through_defensegan_is_the_identity():
    g = _generator()
    purifier = DefenseGAN(g, restarts=2, steps=5)
    adaptive = adaptive_purifier(purifier)
    x = torch.rand(3, 1, 12, 12, requires_grad=True)
    v = torch.randn(3, 1, 12, 12)
    torch.manual_seed(0)
    out = adaptive(x)
    (grad,) = torch.autograd.grad((out * v).sum(), x)
    assert torch.equal(grad, v)
    torch.manual_seed(0)
    assert torch.allclose(out, purifier(x.detach()))  # same forward as the purifier
    # the naive path: the autograd gradient of the projection is zero
    (naive,) = torch.autograd.grad((purifier(x) * v).sum(), x)
    assert float(naive.abs().max()) == 0.0


def test_bpda_in_the_sr_defense_replaces_only_the_denoiser():
    torch.manual_seed(0)
    sr = SRDefense(SRResNet(in_channels=1, scale=2, width=8, blocks=1).eval())
    adaptive = adaptive_purifier(sr)
    x = torch.rand(2, 1, 16, 16, requires_grad=True)
    v = torch.randn(2, 1, 16, 16)
    out = adaptive(x)
    assert torch.allclose(out, sr(x.detach()))
    (grad,) = torch.autograd.grad((out * v).sum(), x)
    # identity through the denoiser, then the exact vector-Jacobian product of the SR network at the denoised point
    d = sr.denoiser(x.detach()).requires_grad_(True)
    (expected,) = torch.autograd.grad((sr.super_resolve(d) * v).sum(), d)
    assert torch.allclose(grad, expected, atol=1e-6)
    (naive,) = torch.autograd.grad((sr(x) * v).sum(), x)
    assert float(naive.abs().max()) == 0.0


def _trained_linear(digits_split) -> nn.Module:
    x, y = digits_split[0], digits_split[1]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(150):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


def test_the_suite_flags_the_naive_attack_and_bpda_breaks_the_purifier(digits_split):
    """Digits behind wavelet denoising: the naive attack sees zero gradients (flagged, and it finds
    nothing); BPDA's attack is as strong as on the undefended model; the defense-unaware attack is run
    on the bare classifier and scored through the purifier."""
    clf = _trained_linear(digits_split)
    x, y = digits_split[2][:200], digits_split[3][:200]
    den = WaveletDenoise(sigma=0.04)
    pgd = PGD(eps=0.2, steps=10, step_size=0.05, name="pgd10")
    suite = AttackSuite([pgd, PurifierUnaware(PGD(eps=0.2, steps=10, step_size=0.05), name="pgd10_unaware")],
                        cascade=False)
    naive, _ = suite.evaluate(Purified(clf, den), x, y, warn=False)
    adaptive, _ = suite.evaluate(Purified(clf, adaptive_purifier(den)), x, y, warn=False)
    bare, _ = AttackSuite([pgd], cascade=False).evaluate(clf, x, y, warn=False)
    acc = lambda rep, name: next(r.robust_acc for r in rep.rows if r.name == name)  # noqa: E731
    assert naive.clean_acc > 0.8 and abs(naive.clean_acc - adaptive.clean_acc) < 1e-9
    assert "zero_gradients" in {f.check for f in naive.flags}
    assert "zero_gradients" not in {f.check for f in adaptive.flags}
    assert acc(naive, "pgd10") > naive.clean_acc - 0.05  # no gradient: only its random start moves the input
    assert acc(adaptive, "pgd10") < acc(bare, "pgd10") + 0.1
    assert acc(adaptive, "pgd10") < acc(naive, "pgd10") - 0.3
    # the unaware attack never sees the purifier: the same row with and without BPDA
    assert abs(acc(naive, "pgd10_unaware") - acc(adaptive, "pgd10_unaware")) < 1e-9


def test_purifier_unaware_needs_an_undefended_model(digits_split):
    clf = _trained_linear(digits_split)
    with pytest.raises(ValueError, match="undefended"):
        PurifierUnaware(PGD(eps=0.1, steps=2)).run(clf, digits_split[2][:4], digits_split[3][:4])
    with pytest.raises(ValueError, match="must be an Attack"):
        PurifierUnaware("pgd")  # type: ignore[arg-type]


# ------------------------------------------------------------------ training, checkpoints, few-shot wrapper
def _fit(module: pl.LightningModule, x: torch.Tensor, steps: int) -> pl.Trainer:
    loader = DataLoader(TensorDataset(x, torch.zeros(len(x), dtype=torch.long)), batch_size=8)
    trainer = quiet_trainer(max_steps=steps)
    trainer.fit(module, train_dataloaders=loader, val_dataloaders=loader)
    return trainer


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Tiny GAN / SR / few-shot checkpoints (16x16 grey), written by Lightning and read with weights_only."""
    root = tmp_path_factory.mktemp("purifier_ckpts")
    torch.manual_seed(0)
    x = torch.rand(16, 1, 16, 16)
    gan = GANTraining(image_size=16, latent_dim=4, gen_width=4, critic_width=4, critic_iters=2, val_steps=2)
    _fit(gan, x, 4).save_checkpoint(root / "gan.ckpt")
    sr = SRTraining(image_size=16, sr_width=4, sr_blocks=1, lr=1e-3)
    _fit(sr, x, 2).save_checkpoint(root / "sr.ckpt")
    fs = AdversarialQuerying(arch="conv4", in_channels=1, image_size=16, arch_kwargs={"width": 4},
                             learner=HeadLearner("protonet"), objective=MetaNatural())
    torch.save({"state_dict": fs.state_dict(), "hyper_parameters": dict(fs.hparams)}, root / "fs.ckpt")
    return {"gan": str(root / "gan.ckpt"), "sr": str(root / "sr.ckpt"), "fs": str(root / "fs.ckpt"),
            "gan_module": gan, "sr_module": sr}


def test_checkpoints_load_with_weights_only(checkpoints):
    g = load_generator(checkpoints["gan"]).eval()
    z = torch.randn(3, 4)
    with torch.no_grad():
        assert torch.allclose(g(z), checkpoints["gan_module"].generator.eval()(z))
    net = load_sr_net(checkpoints["sr"]).eval()
    low = torch.rand(2, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(net(low), checkpoints["sr_module"].net.eval()(low))
    with pytest.raises(ValueError, match="not a GANTraining checkpoint"):
        load_generator(checkpoints["sr"])
    with pytest.raises(ValueError, match="not an SRTraining checkpoint"):
        load_sr_net(checkpoints["gan"])


@pytest.mark.parametrize("purifier", ["defensegan", "sr"])
def test_purified_fewshot_purifies_support_and_queries(checkpoints, purifier):
    module = PurifiedFewShot(checkpoints["fs"], purifier, checkpoints["gan" if purifier == "defensegan" else "sr"],
                             restarts=1, steps=3)
    torch.manual_seed(0)
    sx, sy = torch.rand(10, 1, 16, 16), torch.arange(5).repeat(2)
    qx = torch.rand(5, 1, 16, 16)
    learner = module.adapted_learner(sx, sy)
    assert learner.purifier is not None and learner.undefended is not learner.learner
    torch.manual_seed(1)
    got = learner(qx)
    # by hand: the learner adapted on the purified support, applied to the purified queries
    torch.manual_seed(1)
    expected = learner.learner(module.purify(qx))
    assert torch.allclose(got, expected, atol=1e-5)
    qg = qx.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(learner(qg).sum(), qg)
    assert float(grad.abs().sum()) > 0  # adaptive=True: BPDA gives the attack a gradient


# ------------------------------------------------------------------ bad input, before any run
def test_bad_input_is_a_clear_error_before_any_run(checkpoints):
    g = _generator()
    with pytest.raises(ValueError, match="restarts must be an integer >= 1"):
        DefenseGAN(g, restarts=0)
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        DefenseGAN(g, steps=-3)
    with pytest.raises(ValueError, match="generator makes images of shape"):
        DefenseGAN(g, restarts=1, steps=1).project(torch.rand(2, 1, 28, 28))
    with pytest.raises(ValueError, match="wavelet='haar2' is not a discrete wavelet PyWavelets knows"):
        WaveletDenoise("haar2")
    # PurifiedFewShot checks its settings before it reads any file
    for kwargs, match in (({"restarts": 0}, "restarts"), ({"steps": 0}, "steps"),
                          ({"purifier": "sr", "wavelet": "db99"}, "wavelet='db99'")):
        args = {"fewshot_checkpoint": "/nonexistent.ckpt", "purifier": "defensegan",
                "purifier_checkpoint": "/nonexistent.ckpt", **kwargs}
        with pytest.raises(ValueError, match=match):
            PurifiedFewShot(**args)
    # a generator trained on 16x16 images in front of a 20x20 learner
    fs20 = AdversarialQuerying(arch="conv4", in_channels=1, image_size=20, arch_kwargs={"width": 4},
                               learner=HeadLearner("protonet"), objective=MetaNatural())
    path = checkpoints["fs"].replace("fs.ckpt", "fs20.ckpt")
    torch.save({"state_dict": fs20.state_dict(), "hyper_parameters": dict(fs20.hparams)}, path)
    with pytest.raises(ValueError, match=r"generator makes images of shape \(1, 16, 16\) but the data has shape "
                                         r"\(1, 20, 20\)"):
        PurifiedFewShot(path, "defensegan", checkpoints["gan"])
    with pytest.raises(ValueError, match="loss='lsgan'"):
        GANTraining(loss="lsgan")
    with pytest.raises(ValueError, match="divisible by scale"):
        SRTraining(image_size=27, scale=2)
    with pytest.raises(ValueError, match="need their training checkpoint"):
        PurifiedFewShot(checkpoints["fs"], "sr", None)
