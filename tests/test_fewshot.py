"""Few-shot meta-learning (issue 4): heads, backbones, task plumbing, the query attack, every head end to end."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers import quiet_trainer
from lightning_adv.datamodules.fewshot import (CIFARFSFewShot, ClassFolderFewShot, FC100FewShot, MetaTrainClassification,
                                 MiniImageNetFewShot, OmniglotFewShot)
from lightning_adv.datamodules.fewshot_standins import write_fewshot_standin
from lightning_adv.attacks import PGD
from lightning_adv.meta import EpisodeAccuracy, EpisodeDataset, R2D2Head, ridge_regression_logits
from lightning_adv.models import create_model
from lightning_adv.models.fewshot import FeatureDenoise
from lightning_adv.modules import AdversarialQuerying
from lightning_adv.compat import convert_hparams
from lightning_adv.attacks import cross_entropy_loss

warnings.filterwarnings("ignore", category=UserWarning)
SMALL = dict(ways=3, shots=2, queries=2, tasks_per_batch=2, train_episodes=4, val_shots=1, test_shots=2,
             test_queries=2, val_episodes=2, test_episodes=4, eval_tasks_per_batch=2)
#: quiet_trainer arguments of the short fits here (with Lightning's sanity check)
SHORT_FIT = dict(max_epochs=1, limit_train_batches=2, limit_val_batches=1, num_sanity_val_steps=2)


@pytest.fixture(scope="module")
def fs_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("fewshot")
    for name in ("mini-imagenet", "cifar-fs", "fc100", "omniglot"):
        write_fewshot_standin(root / name, name)
    return root


def _omniglot(fs_root, **kw):
    args = {**SMALL, "val_classes": 3, **kw}
    return OmniglotFewShot(data_dir=str(fs_root / "omniglot"), **args)


def _module(**kw):
    args = dict(arch="conv4", in_channels=1, image_size=28, arch_kwargs={"width": 8}, head="r2d2", ways=3,
                attack=PGD(eps=0.1, steps=2, step_size=0.05, bn_mode="train"),
                eval_attack=PGD(eps=0.1, steps=3, step_size=0.05), maml_steps=1, maml_test_steps=2)
    args.update(kw)
    # the test cases name learner and objective by the old flat arguments (head, training_mode, maml_*)
    if "learner" not in args:
        args = convert_hparams(args, "AdversarialQuerying")[1]
    return AdversarialQuerying(**args)


# ---------------------------------------------------------------------- R2-D2 head
def test_r2d2_equals_primal_ridge_solution_batched():
    g = torch.Generator().manual_seed(0)
    t, s, d, w, q, lam = 3, 10, 40, 5, 7, 2.5
    x = torch.randn(t, s, d, generator=g, dtype=torch.float64)
    y = torch.randint(0, w, (t, s), generator=g)
    onehot = F.one_hot(y, w).double()
    query = torch.randn(t, q, d, generator=g, dtype=torch.float64)
    logits = ridge_regression_logits(x, onehot, query, lam)
    for i in range(t):  # primal: W = (X^T X + lam I)^-1 X^T Y, one task at a time
        weights = torch.linalg.solve(x[i].T @ x[i] + lam * torch.eye(d, dtype=torch.float64), x[i].T @ onehot[i])
        torch.testing.assert_close(logits[i], query[i] @ weights)


def test_r2d2_head_scale_lambda_and_gradients_reach_features():
    head = R2D2Head(lam=50.0, learn_lambda=True, scale=1.0)
    support = torch.randn(2, 6, 16, requires_grad=True)
    query = torch.randn(2, 4, 16, requires_grad=True)
    labels = torch.tensor([[0, 0, 1, 1, 2, 2]] * 2)
    logits = head.fit(support, labels, 3)(query)
    assert logits.shape == (2, 4, 3)
    logits.sum().backward()
    for t in (support, query, head.scale, head.log_lam):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0
    with torch.no_grad():
        head.scale.fill_(3.0)
    torch.testing.assert_close(head.fit(support, labels, 3)(query), 3 * logits.detach(), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="lambda"):
        R2D2Head(lam=0.0)


# ---------------------------------------------------------------------- backbones
@pytest.mark.parametrize("arch,size,dim", [("r2d2_embedding", 32, 8192), ("r2d2_embedding", 84, 51200),
                                           ("conv4", 84, 1600), ("resnet12", 32, 2560)])
def test_fewshot_backbones_feature_dims(arch, size, dim):
    model = create_model(arch, in_channels=3, input_size=size).eval()
    assert model.feature_dim(size) == dim
    with torch.no_grad():
        assert model(torch.rand(2, 3, size, size)).shape == (2, dim)
    params = sum(p.numel() for p in model.parameters())
    expected = {"r2d2_embedding": 2.61e6, "conv4": 0.113e6, "resnet12": 12.4e6}[arch]  # authors' sizes
    assert abs(params - expected) / expected < 0.02
    classifier = create_model(arch, in_channels=3, input_size=size, num_classes=7).eval()
    with torch.no_grad():
        assert classifier(torch.rand(2, 3, size, size)).shape == (2, 7)


def test_feature_denoising_block_starts_as_identity_and_learns():
    block = FeatureDenoise(8).eval()
    x = torch.randn(2, 8, 5, 5)
    torch.testing.assert_close(block(x), x)
    net = create_model("r2d2_embedding", in_channels=3, input_size=32, denoise_after=[4])
    assert any(isinstance(m, FeatureDenoise) for m in net.block4)
    with pytest.raises(ValueError, match="denoise_after"):
        create_model("r2d2_embedding", denoise_after=[5])


# ---------------------------------------------------------------------- data
def test_episodes_fixed_by_seed_and_labelled_per_task(fs_root):
    dm = _omniglot(fs_root)
    dm.setup("test")
    a = [t[0] for t in (dm.test_set[i] for i in range(3))]
    dm2 = _omniglot(fs_root)
    dm2.setup("test")
    for i in range(3):
        torch.testing.assert_close(dm2.test_set[i][0], a[i])
    dm3 = _omniglot(fs_root, seed=5)
    dm3.setup("test")
    assert any(not torch.equal(dm3.test_set[i][0], a[i]) for i in range(3))
    sx, sy, qx, qy = dm.test_set[0]
    assert sx.shape == (3 * 2, 1, 28, 28) and qx.shape == (3 * 2, 1, 28, 28)
    assert sorted(sy.tolist()) == [0, 0, 1, 1, 2, 2] and sorted(qy.tolist()) == [0, 0, 1, 1, 2, 2]
    assert 0 <= float(sx.min()) and float(sx.max()) <= 1


def test_training_episodes_are_redrawn_each_epoch(fs_root):
    dm = _omniglot(fs_root)
    dm.setup("fit")
    first, second = dm.train_set[0][0], dm.train_set[0][0]
    assert not torch.equal(first, second)


@pytest.mark.parametrize("kw,match", [({"ways": 9}, "ways=9"), ({"shots": 5, "queries": 3}, "shots \\+ queries"),
                                      ({"test_ways": 7}, "ways=7")])
def test_impossible_task_shapes_raise_at_setup(fs_root, kw, match):
    dm = _omniglot(fs_root, **kw)
    with pytest.raises(ValueError, match=match):
        dm.setup(None)


@pytest.mark.parametrize("cls,name,shape", [(MiniImageNetFewShot, "mini-imagenet", (3, 84, 84)),
                                            (CIFARFSFewShot, "cifar-fs", (3, 32, 32)),
                                            (FC100FewShot, "fc100", (3, 32, 32))])
def test_learn2learn_datasets_read_standins(fs_root, cls, name, shape, tmp_path):
    dm = cls(data_dir=str(fs_root / name), **SMALL)
    dm.setup(None)
    sx, sy, qx, qy = next(iter(dm.train_dataloader()))
    assert sx.shape == (2, 6, *shape) and qx.shape == (2, 6, *shape) and sy.shape == (2, 6)
    assert 0 <= float(sx.min()) and float(sx.max()) <= 1
    sx, sy, qx, qy = next(iter(dm.test_dataloader()))
    assert sx.shape == (2, 6, *shape)
    missing = cls(data_dir=str(tmp_path / "nothing"), **SMALL)
    with pytest.raises(FileNotFoundError, match="not found"):
        missing.setup("fit")


def test_class_folder_tree_from_zip_and_meta_train_classification(tmp_path):
    import zipfile

    from PIL import Image
    tree = tmp_path / "tree"
    for a in range(2):
        for c in range(3):
            d = tree / f"alpha{a}" / f"char{c}"
            d.mkdir(parents=True)
            for i in range(4):
                Image.fromarray(np.full((30, 30), 40 * c + 10 * i, dtype=np.uint8)).save(d / f"{i}.png")
    archive = tmp_path / "tree.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for p in tree.rglob("*.png"):
            z.write(p, p.relative_to(tree))
    dm = ClassFolderFewShot(train_path=str(archive), test_path=str(tree), data_dir=str(tmp_path / "cache"),
                            val_classes=2, **{**SMALL, "ways": 2, "test_ways": 2, "queries": 1, "test_queries": 1})
    dm.setup(None)
    assert len(dm.train_set.meta.labels) == 4 and len(dm.val_set.meta.labels) == 2
    assert len(dm.test_set.meta.labels) == 6
    assert dm.input_shape == (1, 28, 28)
    cls = MetaTrainClassification(dm, batch_size=4, val_per_class=1)
    cls.setup("fit")
    assert cls.num_classes == 4
    x, y = next(iter(cls.train_dataloader()))
    assert x.shape[1:] == (1, 28, 28) and int(y.max()) < 4


# ---------------------------------------------------------------------- metric
def test_episode_accuracy_mean_and_ci_match_reference():
    accs = torch.tensor([0.2, 0.6, 1.0, 0.8, 0.4])
    metric = EpisodeAccuracy()
    metric.update(accs[:2])
    metric.update(accs[2:])
    mean, ci, n = metric.compute()
    ref = accs.double().numpy()
    assert int(n) == 5
    assert float(mean) == pytest.approx(ref.mean())
    assert float(ci) == pytest.approx(1.96 * ref.std() / math.sqrt(5), rel=1e-5)


# ---------------------------------------------------------------------- the query attack
def _batch(fs_root):
    dm = _omniglot(fs_root)
    dm.setup("test")
    return next(iter(dm.test_dataloader()))


def test_query_attack_moves_only_queries_inside_ball_and_raises_loss(fs_root):
    torch.manual_seed(0)
    module = _module(head="r2d2").eval()
    sx, sy, qx, qy = _batch(fs_root)
    sx_before = sx.clone()
    learner = module.adapt(sx, sy)
    attack = PGD(eps=0.1, steps=10, step_size=0.03)
    qx_adv = module.attack_tasks(learner, qx, qy, attack, cross_entropy_loss)
    assert torch.equal(sx, sx_before)  # the support is never perturbed
    assert qx_adv.shape == qx.shape
    assert float((qx_adv - qx).abs().max()) <= 0.1 + 1e-6
    assert float(qx_adv.min()) >= 0 and float(qx_adv.max()) <= 1
    with torch.no_grad():
        clean = F.cross_entropy(learner(qx).flatten(0, 1), qy.flatten())
        adv = F.cross_entropy(learner(qx_adv).flatten(0, 1), qy.flatten())
    assert adv > clean


def test_interface_episodes_and_adapted_learner(fs_root):
    module = _module(head="maml", arch_kwargs={"width": 8})
    module.train()
    batch = _batch(fs_root)
    episodes = list(module.episodes(batch))
    assert len(episodes) == batch[0].shape[0]
    sx, sy, qx, qy = episodes[0]
    assert sx.dim() == 4 and sorted(set(sy.tolist())) == [0, 1, 2] and sorted(set(qy.tolist())) == [0, 1, 2]
    running = [b.clone() for n, b in module.named_buffers() if "running_mean" in n]
    with torch.inference_mode():  # as inside trainer.test
        learner = module.adapted_learner(sx, sy)
    # adapted in eval mode: BatchNorm statistics untouched, the module's own mode restored
    after = [b for n, b in module.named_buffers() if "running_mean" in n]
    assert all(torch.equal(a, b) for a, b in zip(running, after))
    assert module.training and module.backbone.training
    q = qx.clone().requires_grad_(True)
    logits = learner(q)
    assert logits.shape == (qx.shape[0], 3)
    (grad,) = torch.autograd.grad(F.cross_entropy(logits, qy), q)
    assert grad.abs().sum() > 0


# ---------------------------------------------------------------------- every head and mode end to end
@pytest.mark.parametrize("head,mode,kw", [
    ("r2d2", "aq", {}),
    ("protonet", "trades", {}),
    ("metaoptnet", "aq", {}),
    ("maml", "adml", {"adv_finetune": PGD(eps=0.1, steps=1, step_size=0.1)}),
    ("maml", "natural", {"maml_layers": "last", "maml_first_order": False,
                         "adv_finetune": PGD(eps=0.1, steps=1, step_size=0.1)}),
])
def test_each_head_trains_and_tests_under_inference_mode(fs_root, head, mode, kw, capsys):
    torch.manual_seed(0)
    module = _module(head=head, training_mode=mode, **kw)
    before = [p.detach().clone() for p in module.backbone.parameters()]
    dm = _omniglot(fs_root)
    trainer = quiet_trainer(**SHORT_FIT, inference_mode=True, max_steps=2)
    trainer.fit(module, datamodule=dm)
    assert trainer.global_step == 2
    assert any(not torch.equal(a, b) for a, b in zip(before, module.backbone.parameters()))
    assert "val/robust_acc" in trainer.callback_metrics
    trainer.test(module, datamodule=dm, verbose=False)
    res = module.test_results
    assert res["acc"]["episodes"] == 4 and 0 <= res["robust_acc"]["mean"] <= 1
    assert "test/acc_ci95" in trainer.callback_metrics
    if "adv_finetune" in kw:
        assert "acc_advtuned" in res and "robust_acc_advtuned" in res
    assert "| robust_acc |" in capsys.readouterr().out


def test_bad_arguments_raise_value_errors():
    with pytest.raises(ValueError, match="head="):
        _module(head="svm")
    with pytest.raises(ValueError, match="training_mode="):
        _module(training_mode="free")
    with pytest.raises(ValueError, match="adv_finetune"):
        _module(head="r2d2", adv_finetune=PGD())
    with pytest.raises(ValueError, match="lr_factors"):
        _module(lr_factors=[0.1])
    with pytest.raises(ValueError, match="head_kwargs"):
        _module(head="protonet", head_kwargs={"lam": 3.0})
    with pytest.raises(ValueError, match="few-shot backbone"):
        AdversarialQuerying(arch="small_cnn")


def test_module_checks_data_shape(fs_root):
    module = _module(image_size=32)
    with pytest.raises(ValueError, match="image_size"):
        quiet_trainer(**SHORT_FIT).fit(module, datamodule=_omniglot(fs_root))
    with pytest.raises(ValueError, match="MAML"):
        quiet_trainer(**SHORT_FIT).fit(_module(head="maml", ways=5), datamodule=_omniglot(fs_root))
    with pytest.raises(ValueError, match="gradient-based learner"):
        _module(head="r2d2", training_mode="adml")


def test_lambda_lr_schedule_matches_authors():
    module = _module(optim={"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True,
                            "milestones": [19, 39, 49]}, lr_factors=[0.06, 0.012, 0.0024])
    cfg = module.configure_optimizers()
    opt, sched = cfg["optimizer"], cfg["lr_scheduler"]["scheduler"]
    lrs = []
    for _ in range(55):
        lrs.append(opt.param_groups[0]["lr"])
        sched.step()
    assert lrs[18] == pytest.approx(0.1) and lrs[19] == pytest.approx(0.006)
    assert lrs[39] == pytest.approx(0.0012) and lrs[49] == pytest.approx(0.00024)


def test_episode_dataset_validates_arguments():
    from torch.utils.data import TensorDataset

    data = TensorDataset(torch.zeros(20, 1, 8, 8), torch.arange(20) % 4)
    l2i = {c: [i for i in range(20) if i % 4 == c] for c in range(4)}
    with pytest.raises(ValueError, match="shots"):
        EpisodeDataset(data, l2i, ways=2, shots=0, queries=1, num_episodes=2)
    ds = EpisodeDataset(data, l2i, ways=4, shots=2, queries=3, num_episodes=2)
    assert ds[1][0].shape == (8, 1, 8, 8) and ds[1][2].shape == (12, 1, 8, 8)
