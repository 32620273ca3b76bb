"""Defensive distillation (Papernot et al. 2016) and why it only masks gradients (Carlini & Wagner 2016).

* ``Classifier.train_temperature``: training cross-entropy at ``logits / T``, evaluation at T = 1;
* the KD loss is Papernot's soft-label cross-entropy up to a constant and the ``t^2`` factor;
* the suite's ``vanishing_ce_gradient`` flag on a saturated softmax;
* the configs: digits teacher -> student -> ``train.py test`` with the eval add-on, MNIST on stand-ins;
* on real data (scikit-learn digits, slow): cross-entropy attacks report high robust accuracy on the
  distilled network, the suite flags it, margin-loss attacks break it as they break a natural model.
"""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightning_adv.callbacks import AttackSuiteEvaluation
from helpers import REPO, load_config, seeded_fit
from lightning_adv.datamodules import DigitsDataModule
from lightning_adv.attacks import FGSM, PGD, AttackSuite, CarliniWagnerL2, GradientMaskingWarning, Square
from lightning_adv.cli import main
from lightning_adv.models import create_model
from lightning_adv.modules import AdvTraining, Classifier, KnowledgeDistillation, OptimConfig, distillation_kl
from lightning_adv.objectives import KD

CFG = REPO / "configs"
TEACHER_DIGITS = CFG / "defensive_distillation_teacher_digits.yaml"
STUDENT_DIGITS = CFG / "defensive_distillation_student_digits.yaml"
TEACHER_MNIST = CFG / "defensive_distillation_teacher_mnist.yaml"
STUDENT_MNIST = CFG / "defensive_distillation_student_mnist.yaml"
EVAL = CFG / "eval_defensive_distillation.yaml"


# ------------------------------------------------------------------ training at temperature
def test_train_temperature_divides_the_training_logits_only():
    torch.manual_seed(0)
    module = Classifier(arch="small_cnn", in_channels=1, train_temperature=100.0)
    x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    logits = torch.randn(4, 10) * 300
    assert torch.allclose(module.objective(logits, x, y), F.cross_entropy(logits / 100, y))
    assert not torch.allclose(module.objective(logits, x, y), F.cross_entropy(logits, y))
    assert torch.equal(module(x), module.model(x))  # deployed / attacked at T = 1: the raw logits
    assert module.hparams.train_temperature == 100.0
    plain = Classifier(arch="small_cnn", in_channels=1)
    assert torch.equal(plain.objective(logits, x, y), F.cross_entropy(logits, y))


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf"), True, "100"])
def test_bad_train_temperature_is_rejected_naming_the_parameter(bad):
    with pytest.raises(ValueError, match="train_temperature"):
        Classifier(arch="small_cnn", in_channels=1, train_temperature=bad)


@pytest.mark.parametrize("cls", [Classifier, AdvTraining, KnowledgeDistillation], ids=lambda c: c.__name__)
def test_saved_hyperparameters_are_constructor_arguments_of_the_class(cls):
    """LightningCLI re-parses a checkpoint's hparams with its class: Classifier's `regularizer` and
    `train_temperature` must not reach a KnowledgeDistillation checkpoint (train.py test failed on it)."""
    from lightning.pytorch.cli import instantiate_module  # what `train.py test --ckpt_path` does with the hparams

    kwargs = {"teacher_arch": "small_cnn"} if issubclass(cls, KnowledgeDistillation) else {}
    module = cls(arch="small_cnn", in_channels=1, arch_kwargs={"width": 4}, **kwargs)
    rebuilt = instantiate_module(cls, dict(module.hparams))
    assert type(rebuilt) is cls and rebuilt.hparams == module.hparams
    assert ("train_temperature" in module.hparams) == (cls is Classifier)


def test_kd_loss_is_papernots_soft_label_cross_entropy_up_to_a_constant_and_t_squared():
    """t^2 KL(p || softmax(s/t)) = t^2 (CE(p, softmax(s/t)) - H(p)): same minimiser, gradient x t^2."""
    torch.manual_seed(0)
    t, classes = 100.0, 10
    student = (torch.randn(8, classes) * 200).requires_grad_(True)
    teacher = torch.randn(8, classes) * 300
    p = F.softmax(teacher / t, dim=-1)
    papernot = -(p * F.log_softmax(student / t, dim=-1)).sum(-1).mean()  # Papernot / Carlini's student loss
    entropy = -(p * p.log()).sum(-1).mean()
    kd = distillation_kl(student, teacher, t, reduction="batchmean")
    assert torch.allclose(kd, t * t * (papernot - entropy), rtol=1e-4)
    g_kd, = torch.autograd.grad(kd, student)
    g_pap, = torch.autograd.grad(papernot, student)
    assert torch.allclose(g_kd, t * t * g_pap, rtol=1e-4, atol=1e-9)
    # the authors' elementwise mean divides by the number of classes as well
    assert torch.allclose(distillation_kl(student, teacher, t, reduction="elementwise_mean"), kd / classes)


# ------------------------------------------------------------------ the sanity flag
class _Linear(nn.Module):
    def __init__(self, scale: float) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(64, 10)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1)) * self.scale


@pytest.mark.parametrize("scale", [1.0, 1000.0])
def test_vanishing_ce_gradient_flags_a_saturated_softmax_only(scale):
    """Logits x1000 (defensive distillation's effect): the CE input gradient is 0 in float32, the margin's is not."""
    model = _Linear(scale).eval()
    x = torch.rand(64, 1, 8, 8)
    with torch.no_grad():
        y = model(x).argmax(1)  # every point clean-correct
    suite = AttackSuite([PGD(eps=0.1, steps=5, name="pgd5")], cascade=False)
    report, records = suite.evaluate(model, x, y, warn=False)
    checks = {f.check for f in report.flags}
    assert "zero_gradients" not in checks  # the margin gradient is the same direction at any scale
    saturated = float(records["sanity/vanishing_ce_grad"].float().mean())
    if scale == 1.0:
        assert saturated == 0.0 and "vanishing_ce_gradient" not in checks
    else:
        assert saturated > 0.9 and "vanishing_ce_gradient" in checks
        flag = next(f for f in report.flags if f.check == "vanishing_ce_gradient")
        assert flag.value == pytest.approx(saturated)
        with pytest.warns(GradientMaskingWarning, match="vanishing_ce_gradient"):
            suite.report(records)


# ------------------------------------------------------------------ configs
def _cli(*args: str, root: Path) -> list[str]:
    return [*args, "--trainer.logger", "false", "--trainer.default_root_dir", str(root), "--trainer.accelerator",
            "cpu", "--trainer.devices", "1", "--trainer.enable_progress_bar", "false"]


def test_configs_follow_papernots_recipe():
    raw = {p.stem: load_config(p) for p in (TEACHER_DIGITS, STUDENT_DIGITS, TEACHER_MNIST,
                                                            STUDENT_MNIST)}
    for data in ("digits", "mnist"):
        teacher = raw[f"defensive_distillation_teacher_{data}"]["model"]["init_args"]
        student = raw[f"defensive_distillation_student_{data}"]["model"]["init_args"]
        kd = student["objective"]["init_args"]
        assert student["objective"]["class_path"] == "lightning_adv.objectives.KD"
        assert teacher["train_temperature"] == kd["temperature"] == 100.0  # T = 100 (paper, MNIST)
        assert kd["alpha"] == 1.0 and kd["kl_reduction"] == "batchmean"  # soft labels only
        assert student["teacher_arch"] == teacher["arch"] == student["arch"]
        assert student["teacher_checkpoint"] == f"checkpoints/teachers/defensive_distillation_teacher_{data}.ckpt"
    # SGD: lr / t^2 on KD's t^2-scaled loss takes the steps lr takes on Papernot's (test above)
    t_opt = raw["defensive_distillation_teacher_mnist"]["model"]["init_args"]["optim"]
    s_opt = raw["defensive_distillation_student_mnist"]["model"]["init_args"]["optim"]
    assert t_opt["optimizer"] == s_opt["optimizer"] == "sgd" and s_opt["weight_decay"] == 0.0
    assert math.isclose(s_opt["lr"], t_opt["lr"] / 100.0 ** 2)
    assert raw["defensive_distillation_teacher_mnist"]["trainer"]["max_epochs"] == 50
    attacks = load_config(EVAL)["trainer"]["callbacks"][0]["init_args"]
    assert attacks["cascade"] is False
    kinds = [(a["class_path"].rsplit(".", 1)[1], a["init_args"].get("loss", "ce")) for a in attacks["attacks"]]
    assert kinds == [("FGSM", "ce"), ("PGD", "ce"), ("PGD", "margin"), ("CarliniWagnerL2", "ce"),
                     ("Square", "ce")]


def test_digits_teacher_student_and_eval_suite_through_the_cli(tmp_path, one_thread, capsys):
    """The documented commands, each cut to a few batches: fit teacher, fit student, test with the suite."""
    short = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "1"]
    teacher = main(_cli("fit", "--config", str(TEACHER_DIGITS), *short, root=tmp_path / "t"))
    assert teacher.model.train_temperature == 100.0 and "val/robust_acc/pgd20_margin" in teacher.trainer.callback_metrics
    teacher_ckpt = tmp_path / "t" / "checkpoints" / "last.ckpt"
    student = main(_cli("fit", "--config", str(STUDENT_DIGITS), *short, "--model.teacher_checkpoint",
                        str(teacher_ckpt), root=tmp_path / "s"))
    assert student.model.has_teacher and student.trainer.global_step == 3
    assert torch.isfinite(student.trainer.callback_metrics["train/loss"])
    student_ckpt = tmp_path / "s" / "checkpoints" / "last.ckpt"
    # train.py test re-parses the student's hyperparameters with KnowledgeDistillation (no teacher needed)
    cli = main(_cli("test", "--config", str(STUDENT_DIGITS), "--config", str(EVAL), "--ckpt_path", str(student_ckpt),
                    "--data.eval_batch_size", "16", "--trainer.limit_test_batches", "0.05",  # "1" parses as 100%
                    root=tmp_path / "e"))
    cb = next(c for c in cli.trainer.callbacks if isinstance(c, AttackSuiteEvaluation))
    assert cb.report is not None and cb.report.mode == "run-all" and cb.report.n == 16
    assert [r.name for r in cb.report.rows] == ["fgsm", "pgd40", "pgd40_margin", "cw_l2_eps1", "square1000"]
    assert "Attack suite (run-all), 16 examples" in capsys.readouterr().out


@pytest.mark.parametrize("config", [TEACHER_MNIST, STUDENT_MNIST], ids=lambda p: p.stem)
def test_mnist_configs_run_fast_dev_run_on_stand_ins(config, standin_root, tmp_path, one_thread):
    args = ["fit", "--config", str(config), "--trainer.fast_dev_run", "1", "--data.data_dir", str(standin_root),
            "--data.batch_size", "4", "--data.eval_batch_size", "4", "--data.val_size", "8"]
    if "student" in config.name:
        teacher = tmp_path / "teacher.pt"
        torch.save(create_model("small_cnn", num_classes=10, in_channels=1).state_dict(), teacher)
        args += ["--model.teacher_checkpoint", str(teacher)]
    cli = main(_cli(*args, root=tmp_path))
    assert cli.trainer.state.finished and cli.trainer.global_step == 1
    assert "val/robust_acc/pgd20" in cli.trainer.callback_metrics
    assert cli.datamodule.input_shape == (1, 28, 28)


# ------------------------------------------------------------------ learning test on real data
ADAM = OptimConfig(optimizer="adam", lr=0.01, weight_decay=0.0, scheduler="constant")
NET = dict(arch="small_cnn", in_channels=1, arch_kwargs={"width": 16}, optim=ADAM)
T, EPS, EPOCHS, N_TEST = 100.0, 0.2, 10, 200


def _median_margin(model: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        top = model(x).topk(2, dim=1).values
    return float((top[:, 0] - top[:, 1]).median())


@pytest.mark.slow
def test_defensive_distillation_masks_cross_entropy_gradients_on_digits(one_thread):
    teacher = seeded_fit(Classifier(**NET, train_temperature=T), DigitsDataModule(batch_size=64), EPOCHS).model.eval()
    kd = KnowledgeDistillation(**NET, teacher_arch="small_cnn", teacher_arch_kwargs={"width": 16},
                               objective=KD(temperature=T, kl_reduction="batchmean"))
    kd.set_teacher(teacher)
    distilled = seeded_fit(kd, DigitsDataModule(batch_size=64), EPOCHS).model.eval()
    natural = seeded_fit(Classifier(**NET), DigitsDataModule(batch_size=64), EPOCHS).model.eval()
    dm = DigitsDataModule()
    dm.setup("test")
    xs, ys = zip(*[dm.test_dataset[i] for i in range(N_TEST)])
    x, y = torch.stack(xs), torch.tensor(ys)

    # the mechanism: trained at T, the student's raw (T = 1) logits are ~T times larger
    assert _median_margin(distilled, x) > 10 * _median_margin(natural, x)

    suite = AttackSuite([FGSM(eps=EPS, name="fgsm"), PGD(eps=EPS, steps=20, step_size=EPS / 8, name="pgd"),
                         PGD(eps=EPS, steps=20, step_size=EPS / 8, loss="margin", name="pgd_margin"),
                         CarliniWagnerL2(steps=30, search_steps=3, lr=0.05, name="cw")], cascade=False)
    dist, _ = suite.evaluate(distilled, x, y, batch_size=N_TEST, warn=False)
    nat, _ = suite.evaluate(natural, x, y, batch_size=N_TEST, warn=False)
    print(dist.table(), nat.table(), sep="\n")
    d = {r.name: r for r in dist.rows}
    n = {r.name: r for r in nat.rows}
    assert dist.clean_acc > 0.85 and nat.clean_acc > 0.9
    # cross-entropy attacks: the distilled network looks robust, the natural one is not
    assert d["pgd"].robust_acc > 0.5 and d["fgsm"].robust_acc > 0.5
    assert n["pgd"].robust_acc < 0.2 and d["pgd"].robust_acc - n["pgd"].robust_acc > 0.4
    # the suite names the cause on the distilled network only
    assert "vanishing_ce_gradient" in {f.check for f in dist.flags}
    assert "zero_gradients" not in {f.check for f in dist.flags}
    assert not nat.flags
    # margin losses break it as they break the natural network (Carlini & Wagner 2016)
    assert d["pgd_margin"].robust_acc < 0.1 and d["pgd_margin"].robust_acc <= n["pgd_margin"].robust_acc + 0.05
    assert d["cw"].robust_acc < 0.05 and d["cw"].mean_norm < 2 * n["cw"].mean_norm

    # with cross-entropy attacks only, the black-box Square attack beats them: flagged as well
    ce_only = AttackSuite([PGD(eps=EPS, steps=20, step_size=EPS / 8, name="pgd"),
                           Square(eps=EPS, n_queries=300, name="square")], cascade=True)
    report, _ = ce_only.evaluate(distilled, x, y, batch_size=N_TEST, warn=False)
    print(report.table())
    assert {"black_box_beats_white_box", "vanishing_ce_gradient"} <= {f.check for f in report.flags}
    assert report.worst_case_acc < 0.1
