"""Any Lightning logger (docs/logging.md): images, figures and text reach TensorBoard, CSV and MLflow-like
loggers; the TensorBoard hparams tab holds clean and robust accuracy; ``test --ckpt_path`` logs next to
the run that wrote the checkpoint."""
from __future__ import annotations

import csv
import glob
import sys
import warnings
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import yaml
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from PIL import Image

from helpers import REPO
from lightning_adv.logging_utils import log_figure, log_image, log_text, run_dir

QUICK = str(REPO / "configs" / "quickstart.yaml")


class _Experiment:
    """What an ``MlflowClient`` offers for artifacts; records every call."""

    def __init__(self):
        self.calls: list[tuple] = []

    def log_image(self, run_id, image, artifact_file=None):
        self.calls.append(("image", run_id, np.asarray(image).copy(), artifact_file))

    def log_figure(self, run_id, figure, artifact_file=None):
        self.calls.append(("figure", run_id, tuple(figure.canvas.get_width_height()), artifact_file))

    def log_text(self, run_id, text, artifact_file=None):
        self.calls.append(("text", run_id, text, artifact_file))


class FakeMLflowLogger(Logger):
    """The Lightning Logger interface with an MLflow-shaped ``experiment`` and ``run_id``."""

    def __init__(self):
        super().__init__()
        self._exp = _Experiment()
        self.metrics: list[dict] = []

    name = property(lambda self: "fake")
    version = property(lambda self: "run123")
    run_id = property(lambda self: "run123")
    experiment = property(lambda self: self._exp)

    def log_metrics(self, metrics, step=None):
        self.metrics.append(dict(metrics))

    def log_hyperparams(self, params, *args, **kwargs):
        pass


class Silent(Logger):
    """A logger that takes nothing but metrics."""

    name = property(lambda self: "silent")
    version = property(lambda self: 0)

    def log_metrics(self, metrics, step=None):
        pass

    def log_hyperparams(self, params, *args, **kwargs):
        pass


def _events(log_dir) -> "EventAccumulator":  # noqa: F821
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def _figure(width_px: int, height_px: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(width_px / 50, height_px / 50), dpi=50)
    fig.add_subplot(1, 1, 1).plot([0, 1], [1, 0])
    return fig


def test_image_figure_and_text_reach_every_kind_of_logger(tmp_path):
    tb = TensorBoardLogger(str(tmp_path), name="tb", version=0)
    csvl = CSVLogger(str(tmp_path), name="csv", version=0)
    fake, silent = FakeMLflowLogger(), Silent()
    loggers = [tb, csvl, fake, silent]
    img = torch.rand(3, 10, 12, generator=torch.Generator().manual_seed(0))
    with pytest.warns(UserWarning, match="Silent cannot take images") as rec:
        log_image(loggers, "val/adversarial_examples", img, step=7)
        log_image(loggers, "val/adversarial_examples", img, step=8)  # the warning comes once
    assert sum("Silent" in str(w.message) for w in rec) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        log_figure(loggers, "ntk", _figure(120, 80), step=7)
        log_text(loggers, "test/attack_suite", "| a | b |", step=7)
    tb.experiment.flush()
    expect = (img * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    # CSV: readable PNG files of the right size and content, named by key and step
    for step in (7, 8):
        png = Image.open(tmp_path / "csv" / "version_0" / "images" / f"val_adversarial_examples_step{step}.png")
        assert png.size == (12, 10) and np.array_equal(np.asarray(png.convert("RGB")), expect)
    fig_png = Image.open(tmp_path / "csv" / "version_0" / "images" / "ntk_step7.png")
    assert fig_png.size == (120, 80)
    assert (tmp_path / "csv" / "version_0" / "text" / "test_attack_suite_step7.txt").read_text() == "| a | b |"
    # MLflow-shaped: artifacts of its run
    kinds = {c[0]: c for c in fake.experiment.calls}
    assert [c[0] for c in fake.experiment.calls] == ["image", "image", "figure", "text"]
    assert kinds["image"][1] == "run123" and np.array_equal(fake.experiment.calls[0][2], expect)
    assert fake.experiment.calls[0][3] == "images/val_adversarial_examples_step7.png"
    assert kinds["figure"][2] == (120, 80) and kinds["text"][2] == "| a | b |"
    # TensorBoard: the image, the figure and the text tags at their steps
    acc = _events(tb.log_dir)
    assert set(acc.Tags()["images"]) == {"val/adversarial_examples", "ntk"}
    assert [e.step for e in acc.Images("val/adversarial_examples")] == [7, 8]
    assert (acc.Images("ntk")[0].width, acc.Images("ntk")[0].height) == (120, 80)
    assert "test/attack_suite/text_summary" in acc.Tags()["tensors"]
    with pytest.raises(ValueError, match="CHW"):
        log_image(loggers, "bad", torch.rand(2, 5, 5))


def test_run_dir_for_loggers_without_a_log_dir(tmp_path):
    trainer = pl.Trainer(logger=[FakeMLflowLogger()], default_root_dir=str(tmp_path), accelerator="cpu",
                         enable_progress_bar=False, enable_model_summary=False)
    assert run_dir(trainer) == str(tmp_path / "fake" / "run123")
    trainer = pl.Trainer(logger=[FakeMLflowLogger(), CSVLogger(str(tmp_path), name="c", version=2)],
                         default_root_dir=str(tmp_path), accelerator="cpu")
    assert run_dir(trainer) == str(tmp_path / "c" / "version_2")


def test_adversarial_grid_of_a_fit_goes_to_all_loggers_at_once(tmp_path):
    from lightning_adv.attacks import PGD
    from lightning_adv.callbacks import PGDEvaluation
    from lightning_adv.datamodules import DigitsDataModule
    from lightning_adv.modules import AdvTraining
    from lightning_adv.objectives import PGDAT

    torch.manual_seed(0)
    tb = TensorBoardLogger(str(tmp_path), name="tb")
    csvl, fake = CSVLogger(str(tmp_path), name="csv"), FakeMLflowLogger()
    module = AdvTraining(arch="small_cnn", num_classes=10, in_channels=1,
                         objective=PGDAT(attack=PGD(eps=0.1, steps=1, step_size=0.1, bn_mode="train")))
    cb = PGDEvaluation(attacks=[PGD(eps=0.1, steps=2, step_size=0.05)], limit_batches=1, num_images=4)
    trainer = pl.Trainer(logger=[tb, csvl, fake], callbacks=[cb], max_epochs=1, limit_train_batches=2,
                         limit_val_batches=1, num_sanity_val_steps=0, accelerator="cpu", enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False)
    trainer.fit(module, DigitsDataModule(batch_size=16))
    # clean / adversarial / amplified perturbation rows of 4 digits (8x8, 1 px padding): 3 x 4 cells of 9 px + 1
    pngs = glob.glob(str(Path(csvl.log_dir) / "images" / "val_adversarial_examples_step*.png"))
    assert len(pngs) == 1 and Image.open(pngs[0]).size == (4 * 9 + 1, 3 * 9 + 1)
    assert [c[0] for c in fake.experiment.calls] == ["image"] and fake.experiment.calls[0][2].shape == (28, 37, 3)
    assert _events(tb.log_dir).Tags()["images"] == ["val/adversarial_examples"]


# ---------------------------------------------------------------- train.py: hparams tab, test next to its run
def _cli(*extra: str, sub: str = "fit"):
    from lightning_adv.cli import main

    return main([sub, "--config", QUICK, "--trainer.enable_progress_bar", "false", "--trainer.accelerator", "cpu",
                 "--trainer.enable_model_summary", "false", "--data.batch_size", "16", "--trainer.limit_val_batches",
                 "2", "--trainer.limit_test_batches", "2", *extra])


def _hparams(acc) -> tuple[set[str], list[str]]:
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    exp = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
    return set(start.session_start_info.hparams), [m.name.tag for m in exp.experiment.metric_infos]


@pytest.fixture(scope="module")
def fitted_run(tmp_path_factory):
    """A tiny quickstart fit under ``<tmp>/runs`` (the configs' default place), TensorBoard and CSV loggers in
    one directory (``version: 0`` for both: a second logger would otherwise take the next version)."""
    tmp = tmp_path_factory.mktemp("logging_run")
    both = tmp / "both.yaml"
    both.write_text(yaml.safe_dump({"trainer": {"logger": [
        {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
         "init_args": {"save_dir": "runs", "name": "q", "version": 0}},
        {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "runs", "name": "q", "version": 0}}]}}))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)
        mp.setattr(sys, "argv", ["train.py"])
        cli = _cli("--config", str(both), "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3")
    return tmp, cli.trainer.callback_metrics, both


def test_hparams_tab_has_the_run_hyperparameters_and_its_accuracies(fitted_run):
    tmp, metrics, _ = fitted_run
    acc = _events(tmp / "runs" / "q" / "version_0")
    hparams, metric_tags = _hparams(acc)
    assert {"arch", "num_classes", "objective/class_path", "objective/init_args/attack/init_args/eps"} <= hparams
    assert "_instantiator" not in hparams
    assert metric_tags == ["hparams/clean_acc", "hparams/robust_acc"]
    assert "hp_metric" not in acc.Tags()["scalars"]
    assert acc.Scalars("hparams/clean_acc")[-1].value == pytest.approx(float(metrics["val/acc"]))
    assert acc.Scalars("hparams/robust_acc")[-1].value == pytest.approx(float(metrics["val/robust_acc"]))


def test_test_with_ckpt_path_logs_into_the_run_of_the_checkpoint(fitted_run, monkeypatch):
    tmp, _, both = fitted_run
    monkeypatch.chdir(tmp)
    run = tmp / "runs" / "q" / "version_0"
    fit_config = (run / "config.yaml").read_text()
    m = _cli("--config", str(both), "--ckpt_path", str(Path("runs/q/version_0/checkpoints/last.ckpt")),
             sub="test").trainer.callback_metrics
    assert sorted(p.name for p in (tmp / "runs" / "q").iterdir()) == ["version_0"]  # no new version
    acc = _events(run)
    assert "test/robust_acc" in acc.Tags()["scalars"] and "val/acc" in acc.Tags()["scalars"]
    assert acc.Scalars("hparams/robust_acc")[-1].value == pytest.approx(float(m["test/robust_acc"]))
    step = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")["global_step"]
    assert [e.step for e in acc.Scalars("hparams/robust_acc")] == [step, step]  # fit's, then test's at the fit's step
    # the CSV logger keeps the fit's metrics.csv and writes the test's next to it
    with open(run / "test" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert float(next(r for r in rows if r.get("test/acc"))["test/acc"]) == pytest.approx(float(m["test/acc"]))
    with open(run / "metrics.csv") as f:
        assert any(r.get("val/acc") for r in csv.DictReader(f))
    assert (run / "config.yaml").read_text() == fit_config and (run / "config_test.yaml").is_file()


def test_a_logger_given_on_the_command_line_wins_over_the_checkpoint_run(fitted_run, monkeypatch):
    tmp, _, both = fitted_run
    monkeypatch.chdir(tmp)
    run = tmp / "runs" / "q" / "version_0"
    before = sorted(p.name for p in run.iterdir())
    _cli("--ckpt_path", str(run / "checkpoints" / "last.ckpt"), "--trainer.logger.init_args.save_dir", "elsewhere",
         sub="validate")
    assert glob.glob(str(tmp / "elsewhere" / "quickstart" / "version_0" / "events.out.tfevents.*"))
    assert (tmp / "elsewhere" / "quickstart" / "version_0" / "config.yaml").is_file()
    assert sorted(p.name for p in run.iterdir()) == before
