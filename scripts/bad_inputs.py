#!/usr/bin/env python
"""Feed bad inputs to ``train.py`` (in-process, :func:`lightning_adv.cli.cli_main`) and to the Python
API, and count how each one ends (the README's reliability table):

* clear: refused before training with one line at the end naming the parameter (the keyword);
* unclear: refused, but the last line does not name it, or is not one short line;
* silent: accepted (training ran);
* crash: an exception that is not a user error (a traceback from inside the code).

    OMP_NUM_THREADS=1 python scripts/bad_inputs.py            # the table (about 2 minutes on CPU)
    OMP_NUM_THREADS=1 python scripts/bad_inputs.py --verbose  # and each case's last line
    OMP_NUM_THREADS=1 python scripts/bad_inputs.py --match api  # only the cases whose name contains "api"

A second table: right inputs that must do what they say (``--trainer.limit_val_batches 1`` is one
batch, ``--model.optim.milestones null`` is accepted, a resumed run continues its version and best
checkpoint, a collapsing run says so): as meant, wrong (accepted but did something else) or refused.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import logging
import math
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Union

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("PYTHONWARNINGS", "ignore")
warnings.filterwarnings("ignore")
logging.getLogger("lightning").setLevel(logging.ERROR)
logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
logging.getLogger("lightning.fabric").setLevel(logging.ERROR)

QUICK = str(REPO / "configs" / "quickstart.yaml")
AQ = str(REPO / "configs" / "aq_omniglot_minimal.yaml")
Keywords = Union[str, tuple[str, ...]]
Case = tuple[str, Union[list[str], Callable[[Path], Any]], Keywords]  # (name, CLI args or API call, keyword(s))


def _files(tmp: Path) -> dict[str, str]:
    """Checkpoints and configs the cases point at (a real one is trained for 1 step)."""
    import torch

    from lightning_adv.cli import main

    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        main(["fit", "--config", QUICK, "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp / "ok"),
              "--trainer.max_steps", "1", "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false"])
    ckpt = tmp / "ok" / "checkpoints" / "last.ckpt"
    (tmp / "text.ckpt").write_text("hello\n")
    torch.save(torch.load(ckpt, weights_only=True)["state_dict"], tmp / "raw.pt")
    (tmp / "bad.yaml").write_text("model:\n  init_args: {arch: [1, 2\n")
    (tmp / "natural.yaml").write_text("model:\n  class_path: lightning_adv.modules.Classifier\n"
                                      "  init_args: {in_channels: 1}\n")
    (tmp / "noattacks.yaml").write_text("trainer:\n  callbacks:\n    - class_path: lightning_adv.callbacks.PGDEvaluation\n"
                                        "      init_args: {attacks: []}\n")
    (tmp / "kd_text.yaml").write_text(
        "model:\n  class_path: lightning_adv.modules.KnowledgeDistillation\n  init_args:\n    arch: small_cnn\n"
        "    in_channels: 1\n    teacher_arch: small_cnn\n"
        f"    teacher_checkpoint: {tmp / 'text.ckpt'}\n    objective: {{class_path: lightning_adv.objectives.KD}}\n")
    (tmp / "one_batch.yaml").write_text("trainer:\n  limit_val_batches: 1\n")
    return {"ckpt": str(ckpt), "text": str(tmp / "text.ckpt"), "raw": str(tmp / "raw.pt"), "bad": str(tmp / "bad.yaml"),
            "natural": str(tmp / "natural.yaml"), "noattacks": str(tmp / "noattacks.yaml"),
            "kd_text": str(tmp / "kd_text.yaml"), "one_batch": str(tmp / "one_batch.yaml")}


def cli_cases(f: dict[str, str]) -> list[Case]:
    a = "--model.objective.init_args.attack."
    obj = "--model.objective"
    o = "--model.optim."
    d = "--data."
    rows: list[tuple[list[str], str]] = [
        ([a + "eps", "-0.1"], "eps"), ([a + "eps", "2"], "eps"), ([a + "eps", "nan"], "eps"), ([a + "eps", "inf"], "eps"),
        ([a + "eps", "0"], "eps"), ([a + "steps", "0"], "steps"), ([a + "steps", "-1"], "steps"),
        ([a + "steps", "2.5"], "steps"), ([a + "step_size", "0"], "step_size"), ([a + "step_size", "-1"], "step_size"),
        ([a + "step_size", "nan"], "step_size"), ([a + "step_size", "0.5"], "step_size"),
        ([a + "restarts", "0"], "restarts"), ([a + "norm", "l3"], "norm"), ([a + "bn_mode", "frozen"], "bn_mode"),
        ([a + "loss", "hinge"], "loss"), ([a + "eot_samples", "0"], "eot_samples"), ([a + "name", "a/b"], "name"),
        (["--model.arch", "resnet99"], "arch"), ([obj, "{class_path: lightning_adv.objectives.FGSMAT}"], "FGSMAT"),
        ([obj, "{class_path: lightning_adv.objectives.Free, init_args: {replays: 0}}"], "replays"),
        ([obj, "{class_path: lightning_adv.objectives.TRADES, init_args: {beta: -1}}"], "beta"),
        ([obj, "{class_path: lightning_adv.objectives.TRADES, init_args: {beta: .nan}}"], "beta"),
        ([obj, "{class_path: lightning_adv.objectives.TRADES, init_args: {beta: .inf}}"], "beta"),
        (["--model.num_classes", "100"], "num_classes"),
        (["--model.in_channels", "3"], "in_channels"), (["--model.std", "[0.0]"], "std"),
        (["--model.mean", "[nan]"], "mean"), (["--model.attak.eps", "0.1"], "attak"),
        ([obj, "{class_path: lightning_adv.objectives.Free, init_args: {step_size: -1}}"], "step_size"),
        (["--model.arch_kwargs", "{\"width\": -3}"], "width"),
        ([o + "lr", "0"], "lr"), ([o + "lr", "-1"], "lr"), ([o + "lr", "nan"], "lr"), ([o + "lr", "inf"], "lr"),
        ([o + "lr", "1e12"], "lr"), ([o + "momentum", "1.5"], "momentum"), ([o + "momentum", "nan"], "momentum"),
        ([o + "weight_decay", "-1"], "weight_decay"), ([o + "weight_decay", ".nan"], "weight_decay"),
        ([o + "milestones", "[5, 3]"], "milestones"), ([o + "optimizer", "lbfgs"], "optimizer"),
        ([o + "scheduler", "step"], "scheduler"), ([o + "gamma", "0"], "gamma"), ([o + "gamma", "nan"], "gamma"),
        ([o + "optimizer", "adam", o + "nesterov", "true"], "nesterov"),
        ([d + "batch_size", "0"], "batch_size"), ([d + "batch_size", "-1"], "batch_size"),
        ([d + "val_size", "-1"], "val_size"), ([d + "val_size", "1.5"], "val_size"), ([d + "val_size", "nan"], "val_size"),
        ([d + "num_workers", "-2"], "num_workers"), ([d + "seed", "-1"], "seed"), ([d + "augment", "maybe"], "augment"),
        (["--trainer.max_epochs", "-5"], "max_epochs"), (["--trainer.accelerator", "tpu9"], "accelerator"),
        (["--trainer.precision", "7"], "precision"), (["--trainer.devices", "0"], "devices"),
        (["--checkpoint.mode", "best"], "mode"), (["--checkpoint.every_n_train_steps", "-1"], "every_n_train_steps"),
        (["--ckpt_path", "/nonexistent/last.ckpt"], "ckpt_path"), (["--ckpt_path", f["text"]], "ckpt_path"),
        (["--ckpt_path", f["raw"]], "ckpt_path"), (["--ckpt_path", f["ckpt"], "--config", f["natural"]], "ckpt_path"),
        (["--config", f["bad"]], "bad.yaml"), (["--config", "/nonexistent.yaml"], "nonexistent.yaml"),
        (["--config", f["noattacks"]], "attacks"), (["--seed_everything", "abc"], "seed_everything"),
        (["--model.class_path", "lightning_adv.modules.Nope"], "Nope"),
        (["--data.class_path", "datamodules.Nope"], "Nope"),
        # issue 24
        ([a + "norm", "l2", a + "eps", "1e9"], "eps"),
        ([obj, "{class_path: lightning_adv.objectives.Free, init_args: {step_size: 50}}"], "step_size"),
        ([obj, "lightning_adv.objectives.Free", "--model.objective.init_args.step_size", "nan"], ("step_size", "nan")),
        ([obj, "{class_path: lightning_adv.objectives.Free, init_args: {step_size: .nan}}"], ("step_size", "nan")),
        ([obj, "lightning_adv.objectives.PGDX"], ("PGDX", "PGDAT")),
        ([obj, "{class_path: lightning_adv.objectives.TRADESS}"], ("TRADESS", "TRADES")),
        (["--trainer.logger", "lightning.pytorch.loggers.TensorBoardLoggr"], ("TensorBoardLoggr", "TensorBoardLogger")),
        (["--trainer.callbacks+=lightning_adv.callbacks.PGDEvaluaton"], ("PGDEvaluaton", "PGDEvaluation")),
        (["--data", "lightning_adv.datamodules.DigitsDataModul"], ("DigitsDataModul", "DigitsDataModule")),
        (["--model", "lightning_adv.modules.AdvTrainin"], ("AdvTrainin", "AdvTraining")),
        (["--config", f["kd_text"]], ("teacher_checkpoint", "text.ckpt")),
        (["--data.mix", "cutmix", a + "loss", "margin"], ("attack.loss", "ce")),
    ]
    cases = [(" ".join(args), ["fit", "--config", QUICK, *args], kw) for args, kw in rows]
    aq = ["fit", "--config", AQ, "--data.data_dir", "{tmp}/omniglot"]
    cases += [("aq --model.ways 7 (data: 5)", [*aq, "--model.ways", "7"], "ways"),
              ("aq --data.ways 50", [*aq, "--data.ways", "50", "--model.ways", "50"], "ways"),
              ("aq --model.objective Robust", [*aq, "--model.objective", "{class_path: lightning_adv.objectives.Robust}"],
               "Robust"),
              ("aq --model.learner.init_args.head svm", [*aq, "--model.learner.init_args.head", "svm"], "head"),
              ("aq --data.image_size 0", [*aq, "--data.image_size", "0"], "image_size")]
    return cases


def api_cases() -> list[Case]:
    import torch

    from lightning_adv.attacks import PGD
    from lightning_adv.modules import AdvTraining, OptimConfig
    from lightning_adv.objectives import PGDAT, TRADES
    from lightning_adv.modules.free import FreeReplay

    def attack_255(_: Path) -> None:
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
        PGD(eps=0.1, steps=2)(model, torch.rand(4, 1, 8, 8) * 255, torch.zeros(4, dtype=torch.long))

    def truncated_image(tmp: Path) -> None:
        import numpy as np
        from PIL import Image

        from torchvision.transforms import ToTensor

        from lightning_adv.datamodules.fewshot import ImageFolderTree

        for c in range(4):
            for i in range(4):
                (tmp / "tree" / f"c{c}").mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.full((8, 8), 9 * c + i, np.uint8)).save(tmp / "tree" / f"c{c}" / f"{i}.png")
        bad = tmp / "tree" / "c0" / "0.png"
        bad.write_bytes(bad.read_bytes()[:40])  # truncated
        tree = ImageFolderTree(tmp / "tree", 1, ToTensor())
        for i in range(len(tree)):
            tree[i]

    def evil(tmp: Path) -> str:
        import pickle

        class Evil:
            def __reduce__(self):  # what a malicious checkpoint does: call a function while unpickling
                return (print, ("unpickled code ran",))

        path = tmp / "evil.ckpt"
        with open(path, "wb") as fh:
            pickle.dump({"state_dict": Evil()}, fh)
        return str(path)

    def text(tmp: Path) -> str:
        (tmp / "notes.txt").write_text("these are notes, not weights\n")
        return str(tmp / "notes.txt")

    def small() -> torch.nn.Module:
        from lightning_adv.models import create_model

        return create_model("small_cnn", num_classes=10, in_channels=1)

    def l2_beyond_the_box(_: Path) -> None:
        PGD(norm="l2", eps=30.0, steps=1)(small(), torch.rand(2, 1, 28, 28), torch.zeros(2, dtype=torch.long))

    def label_15(_: Path) -> None:
        PGD(steps=1)(small(), torch.rand(2, 1, 28, 28), torch.tensor([1, 15]))

    def fewshot_evil(tmp: Path) -> None:
        from lightning_adv.modules import PurifiedFewShot

        PurifiedFewShot(fewshot_checkpoint=evil(tmp), purifier="none")

    def purifier_evil(tmp: Path) -> None:
        from lightning_adv.defenses import load_generator  # what PurifiedFewShot(purifier_checkpoint=...) calls

        load_generator(evil(tmp))

    def weights_text(tmp: Path) -> None:
        from lightning_adv.models import load_model_weights

        load_model_weights(small(), text(tmp))

    def gan_beta1(_: Path) -> None:
        from lightning_adv.modules import GANTraining

        GANTraining(beta1=1.5)

    def free_step(_: Path) -> None:
        from lightning_adv.objectives import Free

        Free(step_size=50)

    return [
        ("api few-shot folder with a truncated image", truncated_image, "0.png"),
        ("api PGD(eps='8/255')", lambda _: PGD(eps="8/255"), ("eps", "'8/255'")),
        ("api PGD(steps='10')", lambda _: PGD(steps="10"), "steps='10'"),
        ("api PGD(norm='l2', eps=1e9)", lambda _: PGD(norm="l2", eps=1e9), "eps"),
        ("api PGD(norm='l2', eps=30) on 28x28 images", l2_beyond_the_box, ("eps", "784")),
        ("api Free(step_size=50)", free_step, "step_size"),
        ("api label 15 for a 10-class model", label_15, ("label 15", "num_classes")),
        ("api OptimConfig(lr='0.1')", lambda _: OptimConfig(lr="0.1"), ("lr", "'0.1'")),
        ("api load_model_weights(text file)", weights_text, "notes.txt"),
        ("api GANTraining(beta1=1.5)", gan_beta1, "beta1"),
        ("api PurifiedFewShot(fewshot_checkpoint=malicious)", fewshot_evil, ("fewshot_checkpoint", "evil.ckpt")),
        ("api purifier_checkpoint=malicious", purifier_evil, ("purifier_checkpoint", "evil.ckpt")),
        ("api PGD(eps=nan)", lambda _: PGD(eps=math.nan), "eps"),
        ("api PGD(steps=0)", lambda _: PGD(steps=0), "steps"),
        ("api PGD(step_size=inf)", lambda _: PGD(step_size=math.inf), "step_size"),
        ("api attack on [0, 255] inputs", attack_255, "[0, 1]"),
        ("api OptimConfig(weight_decay=nan)", lambda _: OptimConfig(weight_decay=math.nan), "weight_decay"),
        ("api OptimConfig(lr=1e12)", lambda _: OptimConfig(lr=1e12), "lr"),
        ("api AdvTraining(PGDAT attack eps 0)", lambda _: AdvTraining(objective=PGDAT(attack=PGD(eps=0.0))), "eps"),
        ("api TRADES(beta=nan)", lambda _: TRADES(beta=math.nan), "beta"),
        ("api FreeReplay(replays=0)", lambda _: FreeReplay(PGD().threat, 0, 0.1), "replays"),
    ]


def meant_cases(f: dict[str, str]) -> list[tuple[str, Callable[[Path], str]]]:
    """Right inputs that must do what they say: each returns '' when it did, else what happened instead."""
    from lightning_adv.cli import main as cli

    def built(*extra: str, tmp: Path) -> Any:
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            return cli(["--config", QUICK, *extra, "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp)],
                       run=False)

    def one_batch(key: str, *extra: str) -> Callable[[Path], str]:
        def check(tmp: Path) -> str:
            value = getattr(built(*extra, tmp=tmp).trainer, key)
            return "" if value == 1 and isinstance(value, int) else f"trainer.{key}={value!r}: the whole split"
        return check

    def milestones_null(tmp: Path) -> str:
        optim = built("--model.optim.milestones", "[3]", "--model.optim.milestones", "null", tmp=tmp).model.hparams.optim
        return "" if optim["milestones"] is None else f"milestones={optim['milestones']}"

    return [(f"--trainer.{k} 1 means one batch", one_batch(k, f"--trainer.{k}", "1"))
            for k in ("limit_train_batches", "limit_val_batches", "limit_test_batches", "limit_predict_batches")] + [
        ("limit_val_batches: 1 in a YAML config means one batch", one_batch("limit_val_batches", "--config", f["one_batch"])),
        ("--model.optim.milestones null is accepted", milestones_null),
    ]


def run_meant(check: Callable[[Path], str], tmp: Path) -> tuple[str, str]:
    try:
        problem = check(tmp)
    except SystemExit as exc:
        return "refused", f"exit {exc.code}"
    except Exception as exc:  # noqa: BLE001
        return "refused", f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"
    return ("as meant", "") if not problem else ("wrong", problem)


def run_case(target: Union[list[str], Callable[[Path], Any]], tmp: Path) -> tuple[str, str]:
    """(outcome before classification: 'refused'/'accepted'/'crash', last line)."""
    from lightning_adv.cli import cli_main
    from lightning_adv.cli_errors import one_line

    err = io.StringIO()
    if callable(target):
        try:
            target(tmp)
        except Exception as exc:  # noqa: BLE001
            line = one_line(exc) or (f"error: {exc}".splitlines()[0] if isinstance(exc, TypeError) else None)
            return ("refused", line) if line else ("crash", f"{type(exc).__name__}: {exc}")
        return "accepted", ""
    args = [a.replace("{tmp}", str(tmp)) for a in target]
    args += ["--trainer.logger", "false", "--trainer.default_root_dir", str(tmp / "run"), "--trainer.max_steps", "1",
             "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false",
             "--trainer.enable_model_summary", "false"]
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            cli_main(args)
    except SystemExit as exc:
        lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
        last = lines[-1] if lines else ""
        return ("refused" if exc.code else "accepted"), last
    except Exception as exc:  # noqa: BLE001
        return "crash", f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return "accepted", ""


def classify(outcome: str, line: str, keyword: Keywords) -> str:
    if outcome != "refused":
        return "silent" if outcome == "accepted" else "crash"
    words = (keyword,) if isinstance(keyword, str) else keyword
    ok = line.startswith("error: ") and all(w.lower() in line.lower() for w in words) and len(line) < 600
    return "clear" if ok else "unclear"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--match", default="", help="only the cases whose name contains this text")
    opts = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    counts = {"clear": 0, "unclear": 0, "silent": 0, "crash": 0}
    meant_counts = {"as meant": 0, "wrong": 0, "refused": 0}
    with tempfile.TemporaryDirectory() as tmp_str:
        tmp = Path(tmp_str)
        files = _files(tmp)
        cases = [c for c in cli_cases(files) + api_cases() if opts.match in c[0]]
        meant = [c for c in meant_cases(files) if opts.match in c[0]]
        for i, (name, check) in enumerate(meant):
            case_dir = tmp / f"meant{i}"
            case_dir.mkdir()
            verdict, line = run_meant(check, case_dir)
            meant_counts[verdict] += 1
            if opts.verbose or verdict != "as meant":
                print(f"{verdict:8s} {name}\n         {line[:300]}", flush=True)
        for i, (name, target, keyword) in enumerate(cases):
            case_dir = tmp / f"case{i}"
            case_dir.mkdir()
            outcome, line = run_case(target, case_dir)
            verdict = classify(outcome, line, keyword)
            counts[verdict] += 1
            if opts.verbose or verdict != "clear":
                print(f"{verdict:8s} {name}\n         {line[:300]}", flush=True)
    print("\n| tried | clear | unclear | silent | crash |\n| ---: | ---: | ---: | ---: | ---: |")
    print(f"| {len(cases)} | {counts['clear']} | {counts['unclear']} | {counts['silent']} | {counts['crash']} |")
    print("\n| right inputs tried | as meant | wrong | refused |\n| ---: | ---: | ---: | ---: |")
    print(f"| {len(meant)} | {meant_counts['as meant']} | {meant_counts['wrong']} | {meant_counts['refused']} |")


if __name__ == "__main__":
    main()
