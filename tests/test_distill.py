"""Knowledge distillation, ARD and Fast-ARD: loss arithmetic, the frozen teacher, clear
errors, free-training mechanics, checkpoints, and learning on digits (slow)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from torch import nn

from digits_models import ADAM, EPS
from helpers import quiet_trainer, seeded_fit
from lightning_adv.datamodules import CIFAR10DataModule, DigitsDataModule
from lightning_adv.attacks import PGD, cross_entropy_loss, kl_loss
from lightning_adv.attacks.threat import LinfThreat
from lightning_adv.models import create_model
from lightning_adv import objectives
from lightning_adv.modules import Classifier, FreeReplay, OptimConfig, distillation_kl, load_teacher
from lightning_adv.modules import KnowledgeDistillation as DistillModule

_OBJECTIVE_ARGS = {"temperature", "alpha", "kl_reduction", "attack", "attack_loss", "attack_temperature",
                   "teacher_input", "clean_kd_weight", "free_replays", "free_step_size", "perturbation_loss"}


def _distiller(objective_cls):
    """``KnowledgeDistillation(..., objective=objective_cls(...))`` from one flat set of keyword arguments."""

    def build(**kw):
        okw = {k: kw.pop(k) for k in list(kw) if k in _OBJECTIVE_ARGS}
        if objective_cls is objectives.FastARD:
            if "attack" in okw:
                attack = okw.pop("attack")
                okw.update(eps=attack.eps, ascent_bn_mode=attack.bn_mode)
            okw.update({new: okw.pop(old) for old, new in (("free_replays", "replays"), ("free_step_size", "step_size"))
                        if old in okw})
        return DistillModule(**kw, objective=objective_cls(**okw))

    build.load_from_checkpoint = DistillModule.load_from_checkpoint
    return build


KnowledgeDistillation, ARD, FastARD = (_distiller(o) for o in (objectives.KD, objectives.ARD, objectives.FastARD))

DIGITS = dict(arch="small_cnn", arch_kwargs={"width": 8}, num_classes=10, in_channels=1, teacher_arch="small_cnn",
              teacher_arch_kwargs={"width": 8})


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: on a shared 2-core machine two threads contend and can run 10x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _digits_teacher(num_classes: int = 10, seed: int = 1) -> nn.Module:
    torch.manual_seed(seed)
    return create_model("small_cnn", num_classes=num_classes, in_channels=1, width=8)


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


class _BatchCounter(Callback):
    def __init__(self):
        self.batches = 0

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.batches += 1


# ------------------------------------------------------------------------------------
# the KL term
# ------------------------------------------------------------------------------------

def test_distillation_kl_hand_computed():
    """B = 2, C = 2, t = 2.

    teacher / t = [[1, 0], [0, 0]]  ->  p = [[e/(e+1), 1/(e+1)], [1/2, 1/2]] = [[0.731059, 0.268941], [0.5, 0.5]]
    student / t = [[0, 0], [1, 0]]  ->  q = [[0.5, 0.5], [0.731059, 0.268941]]
    KL(p1 || q1) = 0.731059 ln(0.731059/0.5) + 0.268941 ln(0.268941/0.5) = 0.110944
    KL(p2 || q2) = 0.5 ln(0.5/0.731059) + 0.5 ln(0.5/0.268941)           = 0.120115
    sum = 0.231059
    batchmean:        t^2 * sum / B     = 4 * 0.231059 / 2 = 0.462117
    elementwise_mean: t^2 * sum / (B C) = 4 * 0.231059 / 4 = 0.231059
    """
    teacher = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    student = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
    assert distillation_kl(student, teacher, 2.0, "batchmean").item() == pytest.approx(0.462117, abs=1e-6)
    assert distillation_kl(student, teacher, 2.0, "elementwise_mean").item() == pytest.approx(0.231059, abs=1e-6)
    # without the t^2 factor the value would be a quarter of it
    assert distillation_kl(student, teacher, 1.0, "batchmean").item() != pytest.approx(0.462117, abs=1e-3)


def test_distillation_kl_matches_the_authors_kldivloss_and_batchmean_over_classes():
    torch.manual_seed(0)
    s, t_logits, T = torch.randn(16, 10) * 3, torch.randn(16, 10) * 3, 30.0
    # the authors' code: alpha * T * T * nn.KLDivLoss()(log_softmax(S/T), softmax(T/T))
    authors = T * T * nn.KLDivLoss()(F.log_softmax(s / T, 1), F.softmax(t_logits / T, 1))
    elementwise = distillation_kl(s, t_logits, T, "elementwise_mean")
    batchmean = distillation_kl(s, t_logits, T, "batchmean")
    assert elementwise.item() == pytest.approx(authors.item(), rel=1e-5)
    assert batchmean.item() == pytest.approx(T * T * F.kl_div(F.log_softmax(s / T, 1), F.softmax(t_logits / T, 1),
                                                              reduction="batchmean").item(), rel=1e-5)
    assert elementwise.item() == pytest.approx(batchmean.item() / 10, rel=1e-6)  # = batchmean / C
    # the gradient reaches the student only
    s.requires_grad_(True)
    distillation_kl(s, t_logits, T).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0


def test_kd_objective_formula():
    teacher = _digits_teacher()
    module = KnowledgeDistillation(**DIGITS, temperature=4.0, alpha=0.7)
    module.set_teacher(teacher)
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,))
    logits = module.model(x)
    with torch.no_grad():
        t_logits = teacher(x)
    expected = (0.7 * 16 * nn.KLDivLoss()(F.log_softmax(logits / 4, 1), F.softmax(t_logits / 4, 1))
                + 0.3 * F.cross_entropy(logits, y))
    assert torch.allclose(module.objective.distill_loss(logits, module.teacher_logits(x), y), expected, atol=1e-6)


class _AttackSpy:
    """Stands in for the PGD config and records what ARD asks of it."""

    def __init__(self, attack: PGD):
        self.attack, self.calls = attack, []

    def __call__(self, model, x, target, loss_fn=None, **kw):
        x_adv = self.attack(model, x, target, loss_fn=loss_fn, **kw)
        self.calls.append(dict(target=target, loss_fn=loss_fn, x_adv=x_adv))
        return x_adv


@pytest.mark.parametrize("attack_loss,teacher_input", [("ce", "clean"), ("kl", "clean"), ("ce", "adv")])
def test_ard_training_step_loss_formula(attack_loss, teacher_input):
    torch.manual_seed(0)
    teacher = _digits_teacher()
    module = ARD(**{**DIGITS, "arch": "mlp", "arch_kwargs": {"input_size": 8, "hidden": [32]}}, temperature=4.0,
                 alpha=0.6, clean_kd_weight=0.3, attack=PGD(eps=0.1, steps=2, step_size=0.05),
                 attack_loss=attack_loss, teacher_input=teacher_input)
    module.set_teacher(teacher)
    spy = _AttackSpy(module.objective.attack)
    module.objective.attack = spy
    module.log = lambda *a, **k: None
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,))
    loss = module.training_step((x, y), 0)
    (call,) = spy.calls
    x_adv = call["x_adv"]
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6 and (x_adv - x).abs().max() > 0
    with torch.no_grad():
        s_adv, s_clean, t_clean, t_adv = module.model(x_adv), module.model(x), teacher(x), teacher(x_adv)

    def kd(s, t):  # the authors' term: T^2 * nn.KLDivLoss()(log_softmax(S/T), softmax(T/T))
        return 16 * nn.KLDivLoss()(F.log_softmax(s / 4, 1), F.softmax(t / 4, 1))

    target = t_adv if teacher_input == "adv" else t_clean
    expected = 0.6 * kd(s_adv, target) + 0.4 * F.cross_entropy(s_clean, y) + 0.3 * kd(s_clean, t_clean)
    assert torch.allclose(loss, expected, atol=1e-5)
    assert loss.requires_grad
    # what the attack maximised
    if attack_loss == "ce":
        assert torch.equal(call["target"], y)
        assert torch.allclose(call["loss_fn"](s_clean, y), cross_entropy_loss(s_clean, y))  # attack_temperature 1
    else:
        probs = F.softmax(t_clean / 4, 1)
        assert torch.allclose(call["target"], probs, atol=1e-6)
        assert torch.allclose(call["loss_fn"](s_clean, probs), kl_loss(s_clean / 4, probs), atol=1e-6)


def test_free_replay_with_separate_ascent_moves_delta_first():
    """``ascent_closure``: delta takes its step along that loss before the training forward."""
    w = nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([w], lr=0.0)

    class Fake:
        def optimizers(self):
            return opt

        def manual_backward(self, loss):
            loss.backward()

    free = FreeReplay(LinfThreat(0.2), replays=2, step_size=0.1)
    x = torch.tensor([[0.5, 0.5, 0.95]])
    seen = []

    def closure(x_in):
        seen.append(x_in.detach().clone())
        return -(x_in * w).sum(), x_in  # its own input gradient would push delta up

    def ascent(x_in):
        return -(x_in * torch.tensor([1.0, -1.0, 1.0])).sum()  # ascends along (-1, +1, -1)

    free.run(Fake(), x, closure, ascent)
    assert torch.allclose(seen[0], torch.tensor([[0.4, 0.6, 0.85]]))  # moved before the first forward
    assert torch.allclose(seen[1], torch.tensor([[0.3, 0.7, 0.75]]))
    assert torch.allclose(free.delta, torch.tensor([[-0.2, 0.2, -0.2]]))
    assert torch.allclose(w.grad, -seen[1].squeeze(0))  # parameter gradient: the training loss only


# ------------------------------------------------------------------------------------
# the teacher: frozen, outside the checkpoint, loaded from any weight format
# ------------------------------------------------------------------------------------

@pytest.mark.parametrize("cls", [KnowledgeDistillation, ARD, FastARD])
def test_teacher_frozen_outside_checkpoint_and_student_loads_alone(cls, standin_root, tmp_path):
    torch.manual_seed(0)
    teacher_kwargs = {"depth": 10, "widen_factor": 4}  # a BatchNorm teacher, 1.2M parameters
    teacher = create_model("wideresnet", num_classes=10, in_channels=3, **teacher_kwargs)
    for m in teacher.modules():  # non-default BN statistics: any train-mode forward would move them
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    before = _state(teacher)
    path = tmp_path / "trades_wrn.pt"
    torch.save({"module." + k: v for k, v in before.items()}, path)  # TRADES (DataParallel) format

    kwargs = dict(arch="small_cnn", arch_kwargs={"width": 8}, num_classes=10, in_channels=3,
                  teacher_arch="wideresnet", teacher_arch_kwargs=teacher_kwargs, teacher_checkpoint=str(path),
                  optim=OptimConfig(lr=0.05))
    if cls is ARD:
        kwargs["attack"] = PGD(eps=8 / 255, steps=2, step_size=4 / 255, bn_mode="train")
    if cls is FastARD:
        kwargs["attack"] = PGD(eps=8 / 255, bn_mode="train")
        kwargs["free_replays"] = 2
    module = cls(**kwargs)
    assert not module.has_teacher  # loaded lazily, when training starts

    modes = []

    class TeacherWatch(Callback):
        def on_train_start(self, trainer, pl_module):
            pl_module.teacher.register_forward_pre_hook(lambda mod, args: modes.append(mod.training))

    dm = CIFAR10DataModule(data_dir=str(standin_root), batch_size=16, val_size=16, augment=False)
    trainer = quiet_trainer(tmp_path, limit_val_batches=0, max_epochs=1, callbacks=[TeacherWatch()])
    trainer.fit(module, dm)
    assert trainer.global_step == 3 * (2 if cls is FastARD else 1)  # 48 training images / 16
    # the teacher ran, always in eval mode, and nothing of it changed
    assert len(modes) >= 3 and not any(modes)
    t = module.teacher
    assert not t.training and all(not p.requires_grad for p in t.parameters())
    after = t.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    # not part of the student: parameters, state dict, optimiser
    teacher_ids = {id(p) for p in t.parameters()}
    assert not teacher_ids & {id(p) for p in module.parameters()}
    assert not teacher_ids & {id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]}
    ckpt_path = tmp_path / "student.ckpt"
    trainer.save_checkpoint(ckpt_path)
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    assert set(ckpt["state_dict"]) == {"model." + k for k in module.model.state_dict()}
    student_bytes = sum(v.numel() * v.element_size() for v in module.model.state_dict().values())
    teacher_bytes = sum(v.numel() * v.element_size() for v in before.values())
    assert sum(v.numel() * v.element_size() for v in ckpt["state_dict"].values()) == student_bytes
    delta = ckpt.get("free_delta")  # Fast-ARD's perturbation (batch-sized) is saved for resuming
    extra = delta.numel() * delta.element_size() if delta is not None else 0
    size = ckpt_path.stat().st_size
    assert size < 4 * student_bytes + extra + 64_000  # weights, SGD momentum, hparams
    assert size < teacher_bytes / 4
    # loads alone (teacher file gone), with weights_only=True, and validates without a teacher
    path.unlink()
    restored = cls.load_from_checkpoint(ckpt_path, weights_only=True)
    assert not restored.has_teacher
    for a, b in zip(restored.parameters(), module.parameters()):
        assert torch.equal(a, b)
    (res,) = quiet_trainer(tmp_path, limit_val_batches=1.0).validate(restored, dm, verbose=False)
    assert 0.0 <= res["val/acc"] <= 1.0


def test_load_teacher_from_project_checkpoint_raw_and_trades_formats(tmp_path):
    torch.manual_seed(0)
    source = Classifier(arch="small_cnn", arch_kwargs={"width": 8}, num_classes=10, in_channels=1, optim=ADAM)
    trainer = quiet_trainer(tmp_path, limit_val_batches=0, max_epochs=1, limit_train_batches=2)
    trainer.fit(source, DigitsDataModule(batch_size=16))
    trainer.save_checkpoint(tmp_path / "teacher.ckpt")
    sd = source.model.state_dict()
    torch.save(sd, tmp_path / "raw.pt")
    torch.save({"module." + k: v for k, v in sd.items()}, tmp_path / "trades.pt")
    torch.save({"net": sd}, tmp_path / "ard.t7")
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        reference = source.model.eval()(x)
    for name in ("teacher.ckpt", "raw.pt", "trades.pt", "ard.t7"):
        t = load_teacher("small_cnn", tmp_path / name, num_classes=10, in_channels=1, arch_kwargs={"width": 8})
        assert not t.training and not any(p.requires_grad for p in t.parameters())
        with torch.no_grad():
            assert torch.allclose(t(x), reference, atol=1e-6), name


class _NoTraining(Callback):
    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        raise AssertionError("a training step started")


@pytest.mark.parametrize("case,error,match", [
    ("missing", FileNotFoundError, "teacher_checkpoint='.*nowhere.pt' not found"),
    ("none", ValueError, "teacher_checkpoint is required"),
    ("wrong_arch", ValueError, "does not hold weights of teacher_arch='small_cnn'"),
    ("wrong_classes", ValueError, "has 5 output classes .* have 10"),
])
@pytest.mark.parametrize("cls", [KnowledgeDistillation, ARD])
def test_teacher_errors_before_any_training_step(cls, case, error, match, tmp_path):
    path = tmp_path / "teacher.pt"
    if case == "wrong_arch":
        torch.save(create_model("mlp", input_size=8, num_classes=10, in_channels=1).state_dict(), path)
    elif case == "wrong_classes":
        torch.save(_digits_teacher(num_classes=5).state_dict(), path)
    ckpt = {"missing": str(tmp_path / "nowhere.pt"), "none": None}.get(case, str(path))
    module = cls(**DIGITS, teacher_checkpoint=ckpt)  # constructing never needs the file
    trainer = quiet_trainer(tmp_path, limit_val_batches=0, max_epochs=1, callbacks=[_NoTraining()])
    with pytest.raises(error, match=match):
        trainer.fit(module, DigitsDataModule(batch_size=16))
    assert trainer.global_step == 0


def test_teacher_with_other_classes_is_refused_in_memory_too():
    module = KnowledgeDistillation(**DIGITS)
    with pytest.raises(ValueError, match="num_classes=5"):
        module.set_teacher(_digits_teacher(num_classes=5))


@pytest.mark.parametrize("cls,kwargs,param", [
    (KnowledgeDistillation, dict(temperature=0.0), "temperature"),
    (KnowledgeDistillation, dict(temperature=-3.0), "temperature"),
    (KnowledgeDistillation, dict(alpha=1.5), "alpha"),
    (KnowledgeDistillation, dict(alpha=-0.1), "alpha"),
    (KnowledgeDistillation, dict(kl_reduction="mean"), "kl_reduction"),
    (KnowledgeDistillation, dict(teacher_arch="resnet1000"), "teacher_arch"),
    (KnowledgeDistillation, dict(teacher_arch_kwargs={"num_classes": 5}), "teacher_arch_kwargs"),
    (KnowledgeDistillation, dict(teacher_mean=[0.5]), "teacher_std"),
    (ARD, dict(attack_loss="margin"), "attack_loss"),
    (ARD, dict(teacher_input="noisy"), "teacher_input"),
    (ARD, dict(clean_kd_weight=-1.0), "clean_kd_weight"),
    (ARD, dict(alpha=0.0), "alpha"),
    (ARD, dict(attack=PGD(loss="kl")), "attack.loss"),
    (FastARD, dict(perturbation_loss="kl"), "perturbation_loss"),
    (FastARD, dict(free_replays=0), "replays"),
    (FastARD, dict(free_step_size=0.0), "step_size"),
    (ARD, dict(attack_temperature=0.0), "attack_temperature"),
])
def test_bad_distillation_arguments(cls, kwargs, param):
    with pytest.raises(ValueError, match=param):
        cls(**{**DIGITS, **kwargs})


# ------------------------------------------------------------------------------------
# Fast-ARD: replays, the perturbation, checkpoints
# ------------------------------------------------------------------------------------

class _FreeRecorder(Callback):
    """Per batch: optimiser steps, student forwards, the inputs it saw, the perturbation."""

    def __init__(self):
        self.steps, self.forwards, self.deltas, self.worst_dev, self.ranges, self.changed = [], [], [], [], [], []

    def on_train_start(self, trainer, module):
        module.model.register_forward_pre_hook(lambda mod, args: self._inputs.append(args[0].detach().clone()))

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self._x, self._inputs, self._step = batch[0].clone(), [], trainer.global_step
        self._before = [p.detach().clone() for p in module.parameters()]

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.steps.append(trainer.global_step - self._step)
        self.forwards.append(len(self._inputs))
        self.worst_dev.append(max((i - self._x).abs().max().item() for i in self._inputs))
        self.ranges.append((min(i.min().item() for i in self._inputs), max(i.max().item() for i in self._inputs)))
        self.deltas.append(module.free.delta.detach().clone())
        self.changed.append(any(not torch.equal(a, b) for a, b in zip(self._before, module.parameters())))


@pytest.mark.parametrize("perturbation_loss", ["ard", "ce"])
def test_fast_ard_replays_and_keeps_perturbation_in_ball(perturbation_loss, tmp_path):
    torch.manual_seed(0)
    m, eps, batches = 3, 0.1, 4
    module = FastARD(**DIGITS, free_replays=m, attack=PGD(eps=eps), perturbation_loss=perturbation_loss,
                     temperature=4.0, optim=OptimConfig(optimizer="sgd", lr=0.05, milestones=[1]))
    module.set_teacher(_digits_teacher())
    rec = _FreeRecorder()
    trainer = quiet_trainer(tmp_path, limit_val_batches=0, max_epochs=2, limit_train_batches=batches, callbacks=[rec])
    trainer.fit(module, DigitsDataModule(batch_size=32))
    assert rec.steps == [m] * (2 * batches)  # m parameter updates per batch
    assert trainer.global_step == m * 2 * batches
    assert all(rec.changed)
    # per batch: m training forwards ('ce': plus m ascent forwards) and one eval forward for train/acc
    assert rec.forwards == [(2 * m if perturbation_loss == "ce" else m) + 1] * (2 * batches)
    for dev, (lo, hi), delta in zip(rec.worst_dev, rec.ranges, rec.deltas):
        assert dev <= eps + 1e-6  # every input the student saw is in the eps-ball around the batch
        assert lo >= 0.0 and hi <= 1.0  # and an image
        assert delta.abs().max() <= eps + 1e-6
        assert delta.abs().max() > 0
    assert not torch.equal(rec.deltas[0], rec.deltas[1])  # persistent, moving, never reset
    assert max(rec.worst_dev) > eps / 2
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.05 * 0.1)  # stepped per epoch


def test_fast_ard_perturbation_survives_checkpoint_and_resume(tmp_path):
    torch.manual_seed(0)
    teacher_path = tmp_path / "teacher.pt"
    torch.save(_digits_teacher().state_dict(), teacher_path)
    kwargs = dict(**DIGITS, teacher_checkpoint=str(teacher_path), free_replays=2, attack=PGD(eps=0.1), optim=ADAM)
    module = FastARD(**kwargs)
    dm = DigitsDataModule(batch_size=32)
    trainer = quiet_trainer(tmp_path, limit_val_batches=0, max_epochs=1, limit_train_batches=3)
    trainer.fit(module, dm)
    path = tmp_path / "fast.ckpt"
    trainer.save_checkpoint(path)
    saved = module.free.delta.detach().clone()
    assert saved.abs().max() > 0
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    assert torch.equal(ckpt["free_delta"][0], saved)
    assert not any("teacher" in k for k in ckpt["state_dict"])
    # load into a new module
    restored = FastARD.load_from_checkpoint(path, weights_only=True)
    assert torch.equal(restored.free.delta, saved)
    assert restored.free.replays == 2 and restored.objective.perturbation_loss == "ard"

    # resume in a new trainer: the perturbation is back before the first resumed step
    class AtStart(Callback):
        def on_train_start(self, trainer, pl_module):
            self.delta = pl_module.free.delta.detach().clone()

    at_start = AtStart()
    resumed = FastARD(**kwargs)
    trainer2 = quiet_trainer(tmp_path, limit_val_batches=0, max_epochs=2, limit_train_batches=3, callbacks=[at_start])
    trainer2.fit(resumed, dm, ckpt_path=path, weights_only=True)
    assert torch.equal(at_start.delta, saved)
    assert trainer2.global_step == 2 * 3 * 2
    assert not torch.equal(resumed.free.delta, saved)  # and it kept moving


# ------------------------------------------------------------------------------------
# learning on digits
# ------------------------------------------------------------------------------------

def _accuracies(model: nn.Module, eps: float = EPS) -> tuple[float, float]:
    dm = DigitsDataModule()
    dm.setup("test")
    xs, ys = zip(*[dm.test_dataset[i] for i in range(len(dm.test_dataset))])
    x, y = torch.stack(xs), torch.tensor(ys)
    model = model.eval()
    torch.manual_seed(0)
    x_adv = PGD(eps=eps, steps=20, step_size=eps / 8)(model, x, y)
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item(), (model(x_adv).argmax(1) == y).float().mean().item()


@pytest.fixture(scope="module")
def digits_teachers(digits_models):
    """The session's naturally trained and PGD-trained small CNNs (tests/digits_models.py), as raw state-dict files."""
    kinds = {"natural": "natural", "robust": "pgd"}
    acc = {name: _accuracies(digits_models.model(kind)) for name, kind in kinds.items()}
    print(f"teachers (clean, robust): {acc}")
    assert acc["natural"][1] < 0.3 and acc["robust"][1] > 0.5
    return {name: digits_models.path(kind) for name, kind in kinds.items()}


@pytest.fixture(scope="module")
def kd_natural_student(digits_teachers, tmp_path_factory):
    student = KnowledgeDistillation(arch="small_cnn", in_channels=1, optim=ADAM, teacher_arch="small_cnn",
                                    teacher_checkpoint=str(digits_teachers["natural"]), temperature=10.0)
    student = seeded_fit(student, DigitsDataModule(batch_size=64), 10, tmp_path_factory.mktemp("kd"))
    clean, robust = _accuracies(student.model)
    print(f"KD from the natural teacher: clean {clean:.3f} robust {robust:.3f}")
    return clean, robust


@pytest.mark.slow
def test_kd_from_natural_teacher_is_accurate_not_robust(kd_natural_student):
    clean, robust = kd_natural_student
    assert clean > 0.9
    assert robust < 0.3  # a student of a non-robust teacher is not robust (thesis table 4.2)


@pytest.mark.slow
@pytest.mark.parametrize("cls", [ARD, FastARD])
def test_ard_from_robust_teacher_beats_kd_from_natural(cls, digits_teachers, kd_natural_student, tmp_path):
    _, kd_robust = kd_natural_student
    common = dict(arch="small_cnn", in_channels=1, optim=ADAM, teacher_arch="small_cnn",
                  teacher_checkpoint=str(digits_teachers["robust"]), temperature=10.0)
    if cls is ARD:
        student = ARD(**common, attack=PGD(eps=EPS, steps=5, step_size=EPS / 2.5, bn_mode="train"))
        epochs = 10
    else:
        student = FastARD(**common, attack=PGD(eps=EPS), free_replays=4)
        epochs = 3  # 12 replays of each batch
    clean, robust = _accuracies(seeded_fit(student, DigitsDataModule(batch_size=64), epochs, tmp_path).model)
    print(f"{cls.__name__} from the robust teacher: clean {clean:.3f} robust {robust:.3f} | KD-natural {kd_robust:.3f}")
    assert clean > 0.85
    assert robust > kd_robust + (0.25 if cls is ARD else 0.15)
