"""RobustnessReport: the RobustBench JSON equals the suite's report, the eps curve, the figure, bad input, the CLI."""
from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path
from typing import Optional

import lightning.pytorch as pl
import pytest
import torch
import yaml
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor

from lightning_adv.callbacks import RobustnessReport
from helpers import REPO, cli_args
from lightning_adv.datamodules import DigitsDataModule
from lightning_adv.attacks import PGD, Attack, AttackOutput, AttackSuite, AutoAttack
from lightning_adv.attacks.robustness import format_eps, robustness_curve
from lightning_adv.cli import main
from lightning_adv.modules import AdvTraining

torch.set_num_threads(1)
EPS, SQUARE, N = 0.15, 20, 32
CURVE = [0.0, 0.05, 0.15, 0.3]


@pytest.fixture(scope="module")
def quick_ckpt(tmp_path_factory) -> Path:
    """The quickstart trained through train.py for 3 epochs (~20 s): clean accuracy well above chance."""
    tmp = tmp_path_factory.mktemp("quick")
    main(cli_args(tmp, "--trainer.max_epochs", "3", "--trainer.limit_val_batches", "1"))
    return tmp / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def tested(quick_ckpt, tmp_path_factory):
    """One trainer.test of the quickstart checkpoint with the report (32 digits, Square 20 queries)."""
    tmp = tmp_path_factory.mktemp("report")
    module = AdvTraining.load_from_checkpoint(quick_ckpt, weights_only=True)
    cb = RobustnessReport(eps=EPS, eps_curve=CURVE, curve_attacks=["pgd", "apgd-ce"], pgd_restarts=2,
                          square_queries=SQUARE, print_summary=False)
    trainer = pl.Trainer(accelerator="cpu", devices=1, limit_test_batches=1, callbacks=[cb], inference_mode=True,
                         enable_progress_bar=False, enable_model_summary=False,
                         logger=TensorBoardLogger(str(tmp), name="rb"))
    trainer.test(module, DigitsDataModule(eval_batch_size=N), ckpt_path=str(quick_ckpt), weights_only=True)
    return cb, trainer, module


def _first_test_batch() -> tuple[Tensor, Tensor]:
    dm = DigitsDataModule(eval_batch_size=N)
    dm.setup("test")
    return next(iter(dm.test_dataloader()))


def test_robustbench_json_has_the_fields_and_equals_the_suite_on_the_same_data(tested, quick_ckpt):
    cb, trainer, module = tested
    path = Path(trainer.log_dir) / "robustbench.json"
    assert cb.paths[0] == str(path)
    entry = json.loads(path.read_text())
    robustbench_fields = ["link", "name", "authors", "additional_data", "number_forward_passes", "dataset", "venue",
                          "architecture", "eps", "clean_acc", "reported", "autoattack_acc", "footnote", "unreliable"]
    assert all(k in entry for k in robustbench_fields), sorted(entry)
    assert entry["dataset"] == "digits" and entry["architecture"] == "small_cnn" and entry["eps"] == "0.15"
    assert entry["threat_model"] == "Linf" and entry["number_forward_passes"] == 1
    ev = entry["evaluation"]
    assert ev["n_examples"] == N and ev["eps"] == EPS and ev["norm"] == "linf"
    # the same AutoAttack through the suite directly, on the same 32 images
    x, y = _first_test_batch()
    direct, _ = AttackSuite([AutoAttack(eps=EPS, square_queries=SQUARE)]).evaluate(module.eval(), x, y)
    assert ev["clean_acc"] == direct.clean_acc and ev["autoattack_acc"] == direct.rows[0].robust_acc
    assert entry["clean_acc"] == f"{100 * direct.clean_acc:.2f}"
    assert entry["autoattack_acc"] == f"{100 * direct.rows[0].robust_acc:.2f}"
    assert ev["suite"]["rows"][0]["n_fooled"] == direct.rows[0].n_fooled
    # a reduced Square budget is not the standard version, and the entry says so
    assert ev["autoattack"]["version"] == "custom" and ev["autoattack"]["square_queries"] == SQUARE
    assert entry["unreliable"] is True and f"Square {SQUARE} queries" in entry["footnote"]
    assert ev["versions"]["pyautoattack"] == "0.2.0" and ev["versions"]["torch"] == torch.__version__
    assert ev["checkpoint"] == {"path": str(quick_ckpt),
                                "sha256": hashlib.sha256(Path(quick_ckpt).read_bytes()).hexdigest()}
    # the worst case at eps combines AutoAttack and the curve's attacks: never above either
    assert ev["worst_case_acc_at_eps"] <= min(ev["autoattack_acc"], cb.curve.worst_case[CURVE.index(EPS)])
    m = trainer.callback_metrics
    assert float(m["test/robustbench/autoattack_acc"]) == pytest.approx(direct.rows[0].robust_acc)


def test_curve_is_non_increasing_starts_at_clean_accuracy_and_is_written(tested):
    cb, trainer, _ = tested
    curve = cb.curve
    assert curve is not None and curve.eps == CURVE and curve.n == N
    assert curve.clean_acc > 0.3  # a real (briefly trained) model, not chance
    for accs in [*curve.attacks.values(), curve.worst_case]:
        assert accs[0] == curve.clean_acc  # eps = 0: the attacks cannot change a prediction
        assert all(b <= a for a, b in zip(accs, accs[1:])), accs
    assert curve.worst_case[-1] < curve.clean_acc  # the attacks do something at eps 0.3
    assert curve.worst_case == curve.worst_case_cumulative and curve.flags == []
    out = Path(trainer.log_dir)
    rows = list(csv.DictReader(open(out / "robust_acc_vs_eps.csv")))
    assert [float(r["eps"]) for r in rows] == CURVE
    assert [float(r["worst_case"]) for r in rows] == curve.worst_case
    data = json.loads((out / "robust_acc_vs_eps.json").read_text())
    assert data["monotone"] is True and data["attacks"] == curve.attacks
    png = (out / "robust_acc_vs_eps.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    assert matplotlib.image.imread(str(out / "robust_acc_vs_eps.png")).shape[:2] == (400, 600)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out)).Reload()
    assert "test/robust_acc_vs_eps" in events.Tags()["images"]
    assert any(t.startswith("test/robust_acc_vs_eps/worst_case/eps") for t in events.Tags()["scalars"])


class FadingAttack(Attack):
    """A test attack that stops working above eps 0.1 (a masked or broken attack's signature)."""

    def default_label(self) -> str:
        return "fading"

    def _perturb(self, model, x, y, targets: Optional[Tensor] = None) -> AttackOutput:
        assert self.eps is not None
        if self.eps > 0.1:
            return AttackOutput(x.clone())
        return PGD(eps=self.eps, steps=10).run(model, x, y)


def test_accuracy_rising_with_eps_is_flagged(tested):
    _, _, module = tested
    x, y = _first_test_batch()
    eps = [0.0, 0.1, 0.3]
    runs = [AttackSuite([FadingAttack(eps=e)], cascade=False, sanity_checks=False).evaluate(module.eval(), x, y)
            for e in eps]
    curve = robustness_curve(eps, [r for r, _ in runs], [rec for _, rec in runs], "linf")
    accs = curve.attacks["fading"]
    assert accs[2] == accs[0] > accs[1]  # the attack broke points at 0.1 and none at 0.3
    flagged = [f for f in curve.flags if f["check"] == "accuracy_increases_with_eps"]
    assert {(f["attack"], f["eps"]) for f in flagged} == {("fading", 0.3), ("worst_case", 0.3)}
    assert curve.worst_case_cumulative[2] == curve.worst_case_cumulative[1] < accs[2]  # the nested-ball bound
    assert curve.to_dict()["monotone"] is False


@pytest.mark.parametrize("kwargs, match", [
    (dict(eps_curve=[]), r"eps_curve=\[\] is empty"),
    (dict(eps_curve=[0.1, 0.05]), r"eps_curve=\[0.1, 0.05\] is not sorted.*\[0.05, 0.1\]"),
    (dict(eps_curve=[-0.1, 0.1]), r"eps_curve has an invalid radius -0.1.*>= 0"),
    (dict(eps_curve=[0.0, 0.1, 0.1]), r"eps_curve=\[0.0, 0.1, 0.1\] has duplicates"),
    (dict(eps_curve=[0.0, 2.0]), r"eps_curve has an invalid radius 2.0.*exceeds 1"),
    (dict(curve_attacks=["pgd", "cw"]), r"curve_attacks=\['pgd', 'cw'\]: unknown \['cw'\]; choose from"),
    (dict(eps=0.0), r"RobustnessReport.eps=0.0 must be > 0"),
    (dict(square_queries=0), r"square_queries=0"),
])
def test_bad_arguments_fail_in_the_constructor(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RobustnessReport(**{"eps": EPS, **kwargs})


def test_unwritable_output_dir_fails_in_setup_before_any_attack(tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    ran: list[int] = []
    monkeypatch.setattr(AttackSuite, "run_batch", lambda *a, **k: ran.append(1))
    cb = RobustnessReport(eps=EPS, eps_curve=[0.0, 0.1], output_dir=str(blocker / "report"))
    trainer = pl.Trainer(accelerator="cpu", devices=1, limit_test_batches=1, callbacks=[cb], logger=False,
                         enable_progress_bar=False, enable_model_summary=False)
    with pytest.raises(ValueError, match=r"RobustnessReport.output_dir='.*a_file/report' is not writable"):
        trainer.test(AdvTraining(arch="small_cnn", in_channels=1), DigitsDataModule(eval_batch_size=N))
    assert ran == []


def test_eps_formatting_follows_robustbench():
    assert format_eps(8 / 255, "linf") == "8/255" and format_eps(0.0313725, "linf") == "8/255"
    assert format_eps(0.0, "linf") == "0" and format_eps(0.15, "linf") == "0.15" and format_eps(0.5, "l2") == "0.5"
    assert format_eps(0.2, "linf") == "0.2" and format_eps(0.0627451, "linf") == "16/255"
    assert format_eps(0.0627451, "l2") == "0.0627451"


def test_robustbench_configs_through_train_py_test(quick_ckpt, tmp_path, capsys):
    cifar = yaml.safe_load((REPO / "configs/eval_robustbench.yaml").read_text())["trainer"]["callbacks"][0]
    assert [format_eps(e, "linf") for e in cifar["init_args"]["eps_curve"]] == \
        [f"{k}/255" if k else "0" for k in (0, 2, 4, 6, 8, 10, 12, 16)]
    assert cifar["init_args"]["square_queries"] == 5000 and format_eps(cifar["init_args"]["eps"], "linf") == "8/255"
    RobustnessReport(**cifar["init_args"])  # the CIFAR config's arguments are valid
    raw = yaml.safe_load((REPO / "configs/eval_robustbench_digits.yaml").read_text())
    args = raw["trainer"]["callbacks"][0]["init_args"]
    assert args["eps"] == 0.15 and args["eps"] in args["eps_curve"] and args["square_queries"] < 5000
    # CPU seconds, not minutes: one batch of 16, a two-point curve of PGD only, Square 20 queries
    args.update(eps_curve=[0.0, 0.15], curve_attacks=["pgd"], square_queries=SQUARE, limit_batches=1)
    small = tmp_path / "robustbench_small.yaml"
    small.write_text(yaml.safe_dump(raw))
    cli = main(["test", "--config", str(REPO / "configs/quickstart.yaml"), "--config", str(small),
                "--ckpt_path", str(quick_ckpt), "--data.eval_batch_size", "16", "--trainer.limit_test_batches", "0.05",
                "--trainer.logger.init_args.save_dir", str(tmp_path), "--trainer.default_root_dir", str(tmp_path),
                "--trainer.enable_progress_bar", "false", "--trainer.accelerator", "cpu"])
    cb = next(c for c in cli.trainer.callbacks if isinstance(c, RobustnessReport))
    entry = json.loads((Path(cli.trainer.log_dir) / "robustbench.json").read_text())
    assert entry["evaluation"]["n_examples"] == 16 and entry["evaluation"]["checkpoint"]["path"] == str(quick_ckpt)
    assert entry["name"] == args["model_name"] and str(tmp_path) in cb.paths[0]
    assert {Path(p).name for p in cb.paths} == {"robustbench.json", "robust_acc_vs_eps.json",
                                                "robust_acc_vs_eps.csv", "robust_acc_vs_eps.png"}
    assert "RobustBench entry (Linf, eps 0.15, 16 examples)" in capsys.readouterr().out
