"""The suite callback under trainer.test, through train.py's CLI configs, under 2-process DDP, and on few-shot tasks."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Iterator

import lightning.pytorch as pl
import pytest
import torch
import yaml
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor, nn

from lightning_adv.callbacks import AttackSuiteEvaluation
from helpers import REPO, fork_train_py
from lightning_adv.datamodules import DigitsDataModule
from lightning_adv.attacks import FGSM, PGD, FewShotLearnerModule
from lightning_adv.cli import main
from lightning_adv.modules import Classifier

torch.set_num_threads(1)


def _suite_callback(out_dir=None, **kw) -> AttackSuiteEvaluation:
    return AttackSuiteEvaluation([FGSM(eps=0.1, name="fgsm"), PGD(eps=0.1, steps=5, name="pgd5")],
                                 output_dir=out_dir, print_table=False, **kw)


def test_trainer_test_under_inference_mode_writes_parseable_reports(tmp_path):
    cb = _suite_callback()
    trainer = pl.Trainer(accelerator="cpu", devices=1, limit_test_batches=2, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[cb], inference_mode=True,  # Lightning's default
                         logger=TensorBoardLogger(str(tmp_path), name="suite"))
    model = Classifier(arch="small_cnn", in_channels=1)
    dm = DigitsDataModule(batch_size=32, eval_batch_size=32)
    trainer.test(model, dm)
    report = cb.report
    assert report is not None and report.n == 64  # two batches, each example once
    json_path, csv_path, ex_path = cb.paths
    assert Path(json_path).parent == Path(trainer.log_dir)
    data = json.loads(Path(json_path).read_text())
    assert data["n"] == 64 and [r["name"] for r in data["rows"]] == ["fgsm", "pgd5"]
    rows = list(csv.DictReader(open(csv_path)))
    assert [r["name"] for r in rows] == ["clean", "fgsm", "pgd5", "worst_case"]
    examples = list(csv.DictReader(open(ex_path)))
    assert sorted(int(r["index"]) for r in examples) == list(range(64))
    m = trainer.callback_metrics
    assert float(m["test/robust_acc"]) == pytest.approx(report.worst_case_acc)
    assert float(m["test/robust_acc/pgd5"]) <= float(m["test/acc"])
    assert float(m["test/acc"]) == pytest.approx(report.clean_acc)  # the module's clean accuracy, same examples
    events = list(Path(trainer.log_dir).glob("events.out.tfevents*"))
    assert events  # the table went to TensorBoard as text, scalars too


def test_eval_suite_config_with_quickstart_through_the_cli(tmp_path, capsys):
    cli = main(["test", "--config", str(REPO / "configs/quickstart.yaml"), "--config",
                str(REPO / "configs/eval_suite.yaml"), "--trainer.limit_test_batches", "0.05",
                "--data.eval_batch_size", "16", "--trainer.default_root_dir", str(tmp_path),
                "--trainer.logger.init_args.save_dir", str(tmp_path), "--trainer.enable_progress_bar", "false",
                "--trainer.accelerator", "cpu"])
    cb = next(c for c in cli.trainer.callbacks if isinstance(c, AttackSuiteEvaluation))
    raw = yaml.safe_load((REPO / "configs/eval_suite.yaml").read_text())
    names = [a["init_args"]["name"] for a in raw["trainer"]["callbacks"][0]["init_args"]["attacks"]]
    assert cb.report is not None and [r.name for r in cb.report.rows] == names
    assert cb.report.n == 16 and cb.report.mode == "run-all"  # 0.05 of 29 batches: the first one
    assert Path(cb.paths[0]).exists() and str(tmp_path) in cb.paths[0]
    out = capsys.readouterr().out
    assert "Attack suite (run-all), 16 examples" in out and "worst case" in out


def test_table4_11_config_runs_on_a_cifar_config(tmp_path, standin_root):
    """The table 4.11 add-on with its attack budgets cut (1000 steps on CPU would take minutes)."""
    raw = yaml.safe_load((REPO / "configs/eval_table4_11.yaml").read_text())
    attacks = raw["trainer"]["callbacks"][0]["init_args"]["attacks"]
    assert [a["init_args"]["name"] for a in attacks] == ["mifgsm20", "deepfool", "pgd1000", "pgd20_r100", "autoattack"]
    assert all(abs(a["init_args"]["eps"] - 8 / 255) < 1e-6 for a in attacks)
    for a in attacks:
        args = a["init_args"]
        for key in ("steps", "restarts"):
            if key in args:
                args[key] = min(args[key], 2)
        if a["class_path"].endswith("AutoAttack"):
            args["components"] = ["apgd-ce"]
    small = tmp_path / "table4_11_small.yaml"
    small.write_text(yaml.safe_dump(raw))
    cli = main(["test", "--config", str(REPO / "configs/at_mobilenetv2_cifar10.yaml"), "--config", str(small),
                "--data.data_dir", str(standin_root), "--data.eval_batch_size", "2", "--data.val_size", "8",
                "--data.num_workers", "0", "--trainer.limit_test_batches", "0.125",  # 1 of 8 batches
                "--trainer.logger", "false",
                "--trainer.default_root_dir", str(tmp_path), "--trainer.enable_progress_bar", "false",
                "--trainer.accelerator", "cpu", "--trainer.devices", "1"])
    cb = next(c for c in cli.trainer.callbacks if isinstance(c, AttackSuiteEvaluation))
    assert cb.report is not None and cb.report.n == 2
    assert Path(cb.paths[0]).name == "table4_11.json" and Path(cb.paths[0]).exists()


@pytest.mark.ddp
def test_ddp_report_covers_every_test_example_once(tmp_path):
    """2 CPU processes (gloo); an odd test set, so DistributedSampler pads one rank with a repeat."""
    test_size = 0.0501  # 91 of digits' 1797 images: odd
    dm = DigitsDataModule(test_size=test_size)
    dm.setup("test")
    n = len(dm.test_dataset)
    assert n % 2 == 1
    suite_cfg = tmp_path / "suite.yaml"
    suite_cfg.write_text(
        "trainer:\n  callbacks:\n    - class_path: lightning_adv.callbacks.AttackSuiteEvaluation\n      init_args:\n"
        f"        output_dir: {tmp_path / 'report'}\n        cascade: false\n        attacks:\n"
        "          - {class_path: lightning_adv.attacks.FGSM, init_args: {eps: 0.15, name: fgsm}}\n"
        "          - {class_path: lightning_adv.attacks.PGD, init_args: {eps: 0.15, steps: 3, name: pgd3}}\n")
    proc = fork_train_py("test", "--config", "configs/quickstart.yaml", "--config", str(suite_cfg),
                         "--data.test_size", str(test_size), "--data.eval_batch_size", "16",
                         "--trainer.accelerator", "cpu", "--trainer.strategy", "ddp", "--trainer.devices", "2",
                         "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
                         "--trainer.default_root_dir", str(tmp_path), MKL_NUM_THREADS="1")
    data = json.loads((tmp_path / "report" / "attack_suite.json").read_text())
    assert data["n"] == n
    examples = list(csv.DictReader(open(tmp_path / "report" / "attack_suite_examples.csv")))
    assert sorted(int(r["index"]) for r in examples) == list(range(n))
    labels = [int(dm.test_dataset[i][1]) for i in range(n)]
    assert all(int(r["label"]) == labels[int(r["index"])] for r in examples)  # indices map to the right images
    assert proc.stdout.count("Attack suite (run-all)") == 1  # printed by rank 0 only


# ------------------------------------------------------------------ few-shot
class PrototypeFewShot(pl.LightningModule):
    """Test-only few-shot module implementing the protocol: prototypes over a small embedding.

    Batches are ``(x, y)`` of digits; ``episodes`` cuts them into 2 tasks of 3 ways, 2 shots,
    3 queries per way, relabelled 0..2.
    """

    ways, shots, queries = 3, 2, 3

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 16))
        self.support_seen: list[Tensor] = []
        self.attacked_shapes: list[tuple[int, ...]] = []

    def episodes(self, batch) -> Iterator[tuple[Tensor, Tensor, Tensor, Tensor]]:
        x, y = batch
        per = self.shots + self.queries
        for task in range(2):
            classes = [c for c in range(10) if (y == c).sum() >= per][task * self.ways:(task + 1) * self.ways]
            sx, sy, qx, qy = [], [], [], []
            for new, c in enumerate(classes):
                idx = (y == c).nonzero().squeeze(1)[:per]
                sx.append(x[idx[:self.shots]])
                qx.append(x[idx[self.shots:]])
                sy += [new] * self.shots
                qy += [new] * self.queries
            yield torch.cat(sx), torch.tensor(sy), torch.cat(qx), torch.tensor(qy)

    def adapted_learner(self, support_x: Tensor, support_y: Tensor) -> nn.Module:
        self.support_seen.append(support_x.clone())
        parent = self
        self.embed.eval()
        with torch.no_grad():
            z = self.embed(support_x)
            protos = torch.stack([z[support_y == c].mean(0) for c in range(int(support_y.max()) + 1)])

        class Learner(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.embed = parent.embed

            def forward(self, q: Tensor) -> Tensor:
                assert not self.embed.training  # BatchNorm in eval mode during attacks
                parent.attacked_shapes.append(tuple(q.shape))
                return -torch.cdist(self.embed(q), protos)

        return Learner()

    def test_step(self, batch, batch_idx):
        return None


def test_few_shot_queries_are_attacked_through_the_adapted_learner(tmp_path):
    module = PrototypeFewShot()
    assert isinstance(module, FewShotLearnerModule)
    cb = AttackSuiteEvaluation([PGD(eps=0.2, steps=5, name="pgd5")], cascade=False, output_dir=str(tmp_path),
                               print_table=False)
    trainer = pl.Trainer(accelerator="cpu", devices=1, limit_test_batches=2, logger=False, callbacks=[cb],
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.test(module, DigitsDataModule(eval_batch_size=128))
    report = cb.report
    n_queries = 2 * 2 * module.ways * module.queries  # 2 batches x 2 tasks x 9 queries
    assert report is not None and report.n == n_queries
    assert report.rows[0].robust_acc <= report.clean_acc
    assert report.rows[0].max_norm is None or report.rows[0].max_norm <= 0.2 + 1e-6
    # the learner was adapted on clean supports only; attacks only ever saw query-sized batches
    assert len(module.support_seen) == 4 and all(s.shape[0] == module.ways * module.shots for s in module.support_seen)
    assert module.attacked_shapes and all(s[0] <= module.ways * module.queries for s in module.attacked_shapes)
    examples = list(csv.DictReader(open(cb.paths[2])))
    assert len(examples) == n_queries and {int(r["label"]) for r in examples} <= {0, 1, 2}
