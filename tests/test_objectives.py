"""Training objectives as parts (issue 11): each loss against a direct computation from its
paper's formula, and each difference from the thesis / authors' code told apart by a test."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers import load_config
from lightning_adv.attacks import PGD, kl_loss
from lightning_adv.meta import MAML, batch_statistics
from lightning_adv.modules import AdversarialQuerying, AdvTraining, OptimConfig
from lightning_adv.objectives import ADML, ARD, AWP, MART, PGDAT, TRADES, Objective, awp_perturbation, mart_loss
from lightning_adv.compat import convert_hparams

REPO = Path(__file__).resolve().parents[1]


def _bn_net() -> AdvTraining:
    torch.manual_seed(0)
    return AdvTraining(arch="conv4", in_channels=1, arch_kwargs={"width": 4, "input_size": 16})  # 4 BatchNorm layers


def _batch(n: int = 16):
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 1, 16, 16, generator=g), torch.randint(0, 10, (n,), generator=g)


# ---------------------------------------------------------------------------- MART
def test_mart_loss_matches_the_papers_formula():
    """Wang et al. 2020 eq. (11): BCE(p(x'), y) + beta * 1/n sum_i KL(p(x_i) || p(x'_i)) (1 - p_y(x_i)),
    BCE = -log p_y(x') - log(1 - max_{k != y} p_k(x')), computed here per example with plain loops."""
    torch.manual_seed(0)
    clean, adv, y = torch.randn(6, 5), torch.randn(6, 5), torch.randint(0, 5, (6,))
    loss, _ = mart_loss(clean, adv, y, beta=6.0)
    total = 0.0
    for i in range(6):
        p, q = F.softmax(clean[i], 0), F.softmax(adv[i], 0)
        other = max(q[k] for k in range(5) if k != y[i])
        bce = -torch.log(q[y[i]]) - torch.log(1 - other)
        kl = sum(p[k] * torch.log(p[k] / q[k]) for k in range(5))
        total = total + bce + 6.0 * kl * (1 - p[y[i]])
    assert torch.allclose(loss, total / 6, rtol=1e-3)  # the official 1.0001 / 1e-12 guards shift it by ~1e-4


def test_mart_step_attacks_the_cross_entropy_in_eval_mode_and_trains_in_train_mode():
    module = _bn_net()
    x, y = _batch()
    obj = MART(beta=2.0, attack=PGD(eps=0.1, steps=2, step_size=0.05, random_start=False, start_sigma=0.001))
    state = {k: v.clone() for k, v in module.state_dict().items()}
    torch.manual_seed(3)
    out = obj.step(module, x, y)
    assert module.training  # the attack's eval mode was restored
    module.load_state_dict(state)  # the BN statistics the attack saw
    torch.manual_seed(3)
    x_adv = obj.perturb(module, x, y)
    expected, _ = mart_loss(module.model(x), module.model(x_adv), y, 2.0)
    assert torch.allclose(out.loss, expected, atol=1e-5) and out.loss.requires_grad


# ---------------------------------------------------------------------------- AWP
def test_awp_perturbation_is_gamma_times_weight_norm_along_the_loss_gradient():
    """Wu et al. 2020: v_l = gamma ||w_l|| g_l / ||g_l|| for every conv / linear weight, BN statistics kept."""
    module = _bn_net()
    x, y = _batch()
    buffers = {n: b.clone() for n, b in module.model.named_buffers()}
    loss_fn = lambda: F.cross_entropy(module.model(x), y)  # noqa: E731
    diff = awp_perturbation(module.model, loss_fn, gamma=0.01)
    for n, b in module.model.named_buffers():
        if b.is_floating_point():
            assert torch.equal(b, buffers[n]), n  # running statistics untouched
    params = dict(module.model.named_parameters())
    names = [n for n, p in params.items() if p.dim() > 1]
    assert sorted(diff) == sorted(names) and names  # conv and linear weights only, no biases or BN
    grads = torch.autograd.grad(loss_fn(), [params[n] for n in names])
    for n, g in zip(names, grads):
        assert torch.allclose(diff[n], 0.01 * params[n].norm() * g / g.norm(), rtol=1e-4, atol=1e-8)


def test_awp_trains_at_the_perturbed_weights_and_takes_the_perturbation_off_after_the_step():
    module = _bn_net()
    x, y = _batch()
    obj = AWP(inner=PGDAT(attack=PGD(eps=0.1, steps=1, step_size=0.1, random_start=False, bn_mode="eval")), gamma=0.05)
    w0 = {n: p.detach().clone() for n, p in module.model.named_parameters()}
    opt = torch.optim.SGD(module.model.parameters(), lr=0.1)
    out = obj.step(module, x, y)
    diff = obj._applied
    assert diff and all(torch.allclose(p, w0[n] + diff.get(n, 0)) for n, p in module.model.named_parameters())
    opt.zero_grad()
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in module.model.named_parameters()}
    opt.step()
    obj.after_batch(module)
    for n, p in module.model.named_parameters():  # w <- w - lr * grad L(w + v)
        assert torch.allclose(p, w0[n] - 0.1 * grads[n], atol=1e-6), n
    obj.after_batch(module)  # a second call changes nothing
    assert all(torch.allclose(p, w0[n] - 0.1 * grads[n], atol=1e-6) for n, p in module.model.named_parameters())


def test_awp_wraps_only_input_space_objectives():
    with pytest.raises(ValueError, match="AWP.inner"):
        AWP(inner=MART())
    cfg = AWP(inner=TRADES(beta=3.0), gamma=0.005).config()
    rebuilt = Objective.coerce(cfg)
    assert isinstance(rebuilt.inner, TRADES) and rebuilt.inner.beta == 3.0 and rebuilt.gamma == 0.005


# ---------------------------------------------------------------------------- item 4: TRADES attack
def test_trades_attack_target_is_the_eval_mode_clean_prediction_so_its_objective_is_zero_at_x():
    """Official TRADES: clean softmax and attack both in eval mode, start x + 0.001 N(0, 1). The old code
    took the target from train-mode logits (BN batch statistics), so the KL was not 0 at delta = 0."""
    module = _bn_net()
    x, y = _batch()
    obj = TRADES(attack=PGD(eps=0.1, steps=1, step_size=0.01, random_start=False, start_sigma=0.001))
    seen = {}

    def spy(model, xx, target, loss_fn=None, **kw):
        seen["target"] = target
        with torch.no_grad():
            model.eval()
            seen["kl_at_x"] = loss_fn(model(xx), target)
            model.train()
        return xx

    obj.attack = type("Spy", (), {"__call__": staticmethod(spy), "bn_mode": "eval"})()
    obj.perturb(module, x, y)
    assert seen["kl_at_x"].abs().max() < 1e-5  # the attack objective vanishes at delta = 0
    with torch.no_grad():
        train_target = F.softmax(module.model(x), 1)  # what the old code used
    assert kl_loss(torch.log(train_target), seen["target"]).abs().max() > 1e-4  # the two are told apart
    # the Gaussian start: with zero steps ... one step of 0.01 at most beyond 0.001 N(0, 1)
    torch.manual_seed(0)
    start = PGD(eps=0.1, steps=1, step_size=1e-9, random_start=False, start_sigma=0.001)(module.model, x, y)
    noise = start - x
    assert 0.0005 < float(noise.std()) < 0.002


# ---------------------------------------------------------------------------- item 6: ARD attack temperature
@pytest.mark.parametrize("t_attack", [1.0, 30.0])
def test_ard_attack_temperature_divides_the_students_logits_in_the_attack_loss(t_attack):
    """Authors' main.py attacks CE(S(x'), y) (t = 1); Definition 4.1 literally CE(S^t(x'), y)."""
    torch.manual_seed(0)
    module = _bn_net()
    module.eval()
    x, y = _batch(32)
    obj = ARD(temperature=30.0, attack=PGD(eps=0.1, steps=1, step_size=0.1, random_start=False, bn_mode="eval"),
              attack_temperature=t_attack)
    x_adv = obj.perturb(module, x, y, teacher_clean=torch.zeros(32, 10))
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(module.model(xr) / t_attack, y, reduction="sum"), xr)
    assert torch.allclose(x_adv, (x + 0.1 * g.sign()).clamp(0, 1))
    (g1,) = torch.autograd.grad(F.cross_entropy(module.model(xr), y, reduction="sum"), xr)
    if t_attack != 1.0:
        assert (g.sign() != g1.sign()).any()  # the literal form is a different attack


# ---------------------------------------------------------------------------- items 1, 2: MAML and ADML
def _maml_module(**learner_kw) -> AdversarialQuerying:
    torch.manual_seed(0)
    return AdversarialQuerying(arch="conv4", in_channels=1, image_size=28, arch_kwargs={"width": 4},
                               learner=MAML(ways=3, steps=2, test_steps=2, **learner_kw),
                               objective=ADML(PGD(eps=0.1, steps=1, step_size=0.1, bn_mode="train")))


def _task(n_tasks: int = 1):
    g = torch.Generator().manual_seed(2)
    sx, qx = torch.rand(n_tasks, 6, 1, 28, 28, generator=g), torch.rand(n_tasks, 6, 1, 28, 28, generator=g)
    sy = torch.arange(3).repeat(2).expand(n_tasks, 6).clone()
    return sx, sy, qx, sy.clone()


@pytest.mark.parametrize("eval_bn", ["batch", "running"])
def test_maml_evaluation_uses_the_tasks_batch_statistics_like_the_authors(eval_bn):
    """The authors' Learner runs F.batch_norm(training=True) at test too; eval_bn='running' is the old way."""
    module = _maml_module(eval_bn=eval_bn).eval()
    sx, sy, qx, _ = _task()
    bns = [m for m in module.backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in bns:  # running statistics far from the data's
        m.running_mean.fill_(5.0)
        m.running_var.fill_(0.01)
    saved = [(m.running_mean.clone(), m.running_var.clone()) for m in bns]
    with torch.no_grad():
        out = module.adapted_learner(sx[0], sy[0])(qx[0])
    for m in bns:  # other running statistics
        m.running_mean.fill_(-3.0)
    with torch.no_grad():
        out2 = module.adapted_learner(sx[0], sy[0])(qx[0])
    assert torch.equal(bns[0].running_mean, torch.full_like(bns[0].running_mean, -3.0))  # never updated
    assert all(torch.equal(v, s[1]) for (_, v), s in zip([(m.running_mean, m.running_var) for m in bns], saved))
    if eval_bn == "batch":
        assert torch.allclose(out, out2, atol=1e-5)  # running statistics play no part
        assert all(m.track_running_stats and not m.training for m in bns)  # settings restored
    else:
        assert not torch.allclose(out, out2, atol=1e-3)


def test_batch_statistics_context_normalises_by_the_batch_and_restores_the_layer():
    bn = nn.BatchNorm1d(4).eval()
    bn.running_mean.fill_(3.0)
    x = torch.randn(16, 4)
    with batch_statistics(bn):
        y = bn(x)
    assert torch.allclose(y, F.batch_norm(x, None, None, bn.weight, bn.bias, training=True), atol=1e-6)
    assert not bn.training and bn.track_running_stats and torch.all(bn.running_mean == 3.0)


def test_adml_attacks_the_support_at_every_inner_step_against_the_current_fast_weights():
    """meta_ADML.py regenerates the adversarial support each inner step (the old code attacked it once)."""
    module = _maml_module().train()
    sx, sy, qx, qy = _task()
    calls = []
    real = module.objective.attack

    class Spy:
        bn_mode = real.bn_mode

        def __call__(self, model, x, y, loss_fn=None, mode_module=None, **kw):
            if x.shape[0] == sx.shape[1] and torch.equal(x, sx[0]):  # a support attack
                w = [p.detach().clone() for p in mode_module.parameters()][-2]  # the linear layer's fast weight
                calls.append(w)
            return real(model, x, y, loss_fn=loss_fn, mode_module=mode_module, **kw)

    module.objective.attack = Spy()
    module.log = lambda *a, **k: None
    loss = module.training_step((sx, sy, qx, qy), 0)
    assert loss.requires_grad
    assert len(calls) == module.learner.steps == 2  # once per inner step
    assert not torch.equal(calls[0], calls[1])  # against the weights after the previous step


def test_adml_needs_a_gradient_based_learner():
    with pytest.raises(ValueError, match="gradient-based learner"):
        AdversarialQuerying(arch="conv4", in_channels=1, image_size=28, objective=ADML())


# ---------------------------------------------------------------------------- item 3, 5: configs
def test_maml_configs_use_the_authors_attack_settings():
    e8, e16 = 8 / 255, 16 / 255
    for name, eps, eval_step in [("aq_maml_omniglot_5shot", e16, 4 / 255), ("aq_maml_mini_5shot", e8, 2 / 255),
                                 ("aq_adml_maml_mini_5shot", e8, 2 / 255)]:
        init = load_config(REPO / "configs" / f"{name}.yaml")["model"]["init_args"]
        atk = init["objective"]["init_args"]["attack"]
        assert (atk["steps"], atk["random_start"]) == (1, True), name
        assert atk["eps"] == pytest.approx(eps) and atk["step_size"] == pytest.approx(eps), name
        assert init["eval_attack"]["eps"] == pytest.approx(eps) and init["eval_attack"]["step_size"] == pytest.approx(eval_step)
        assert init["learner"]["init_args"]["eval_bn"] == "batch"


def test_lemma61_config_fits_the_linear_classifier_with_weight_decay():
    from lightning_adv.analysis.local_minima import fit_linear_classifier

    raw = load_config(REPO / "configs" / "ch6_localmin_mlp_cifar10_lemma61.yaml")
    init = [c for c in raw["trainer"]["callbacks"] if c["class_path"].endswith("LocalMinimumInit")][0]["init_args"]
    wd = init["linear_weight_decay"]
    assert wd > 0
    g = torch.Generator().manual_seed(0)  # separable data: without decay the fit drives the loss to ~0
    z = torch.randn(200, 20, generator=g)
    y = (z[:, 0] > 0).long() + 2 * (z[:, 1] > 0).long()
    plain, decayed = fit_linear_classifier(z, y, 4, 0.0, max_iter=200), fit_linear_classifier(z, y, 4, 0.05, max_iter=200)
    with torch.no_grad():
        assert F.cross_entropy(decayed(z), y) > F.cross_entropy(plain(z), y) + 0.05
        assert decayed.weight.norm() < plain.weight.norm()


# ---------------------------------------------------------------------------- old checkpoints
def test_old_checkpoints_fail_with_the_conversion_command_and_convert(tmp_path):
    old = AdvTraining(arch="small_cnn", in_channels=1, arch_kwargs={"width": 4},
                      objective=TRADES(beta=2.0, attack=PGD(eps=0.1, steps=1)))
    hp = dict(old.hparams)
    hp.pop("objective")
    hp.update(method="trades", trades_beta=2.0, attack=PGD(eps=0.1, steps=1, loss="kl").config())
    path, new = tmp_path / "old.ckpt", tmp_path / "new.ckpt"
    torch.save({"state_dict": old.state_dict(), "hyper_parameters": hp, "pytorch-lightning_version": "2.4.0"}, path)
    with pytest.raises(ValueError, match="scripts/convert_checkpoint.py"):
        AdvTraining.load_from_checkpoint(path, weights_only=True)
    proc = subprocess.run([sys.executable, "scripts/convert_checkpoint.py", str(path), str(new)], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    restored = AdvTraining.load_from_checkpoint(new, weights_only=True)
    assert isinstance(restored.objective, TRADES) and restored.objective.beta == 2.0
    assert all(torch.equal(a, b) for a, b in zip(restored.parameters(), old.parameters()))


def test_old_fewshot_arguments_map_to_learner_and_objective():
    cls, hp = convert_hparams({"head": "maml", "training_mode": "adml", "ways": 3, "maml_steps": 2,
                               "attack": {"eps": 0.1}, "lr_factors": [0.5], "optim": {"milestones": [3]}},
                              "AdversarialQuerying")
    module = AdversarialQuerying(arch="conv4", in_channels=1, image_size=28, arch_kwargs={"width": 4}, **hp)
    assert isinstance(module.learner, MAML) and module.learner.steps == 2 and module.learner.eval_bn == "running"
    assert isinstance(module.objective, ADML) and module.optim_cfg.lr_factors == [0.5]
    assert "learner.linear.weight" in module.state_dict()


def test_one_way_to_choose_an_objective_across_modules():
    """Every module takes `objective` and refuses one of another kind, naming the module to use."""
    with pytest.raises(ValueError, match="KnowledgeDistillation"):
        AdvTraining(objective=ARD())
    with pytest.raises(ValueError, match="AdvTraining"):
        from lightning_adv.modules import KnowledgeDistillation
        KnowledgeDistillation(objective=MART())
    with pytest.raises(ValueError, match="episodic"):
        AdvTraining(objective=ADML())
    m = AdvTraining(arch="small_cnn", in_channels=1, objective={"class_path": "lightning_adv.objectives.MART",
                                                                 "init_args": {"beta": 5.0}},
                    optim=OptimConfig(scheduler="constant"))
    assert isinstance(m.objective, MART) and m.hparams.objective["init_args"]["beta"] == 5.0


def test_old_checkpoint_through_the_cli_names_the_converter(tmp_path):
    from lightning_adv.cli import main

    old = AdvTraining(arch="small_cnn", in_channels=1)
    hp = {k: v for k, v in old.hparams.items() if k != "objective"}
    hp.update(method="pgd", attack=PGD(eps=0.1).config(), _class_path="lightning_adv.modules.AdvTraining")
    path = tmp_path / "old.ckpt"
    torch.save({"state_dict": old.state_dict(), "hyper_parameters": hp}, path)
    with pytest.raises(ValueError, match="convert_checkpoint.py"):
        main(["test", "--config", str(REPO / "configs" / "quickstart.yaml"), "--ckpt_path", str(path),
              "--trainer.logger", "false"])
