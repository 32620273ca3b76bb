"""Issue 11, item 7: Fast-ARD against free AT on Fashion-MNIST, setting or implementation?

    OMP_NUM_THREADS=1 python scripts/fastard_vs_free_fmnist.py [--batches 60] [--epochs 2]

A PGD-trained small CNN teacher (width 16, PGD-3), a narrow student (width 8), m = 4 replays, the
same epochs for every student, a subset of the training set per epoch (``--batches`` of
128). Students: free AT, Fast-ARD as configured by the thesis (delta ascends the ARD loss,
t = 30), and one change at a time: delta ascends the student's cross-entropy (Algorithm 2's
text), t = 1, and a teacher trained 3x longer. Clean and PGD-20 accuracy (eps 0.1, step
0.025) on 500 test images through the project's evaluator (``AttackSuite``). Prints a
Markdown table (docs/objectives.md records one run).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import lightning.pytorch as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lightning_adv.datamodules import FashionMNISTDataModule  # noqa: E402
from lightning_adv.attacks import PGD, AttackSuite  # noqa: E402
from lightning_adv.modules import AdvTraining, KnowledgeDistillation, OptimConfig  # noqa: E402
from lightning_adv.objectives import PGDAT, FastARD, Free  # noqa: E402

EPS = 0.1
ADAM = OptimConfig(optimizer="adam", lr=3e-3, weight_decay=0.0, scheduler="constant")


def fit(module: pl.LightningModule, epochs: int, batches: int) -> pl.LightningModule:
    pl.seed_everything(0, verbose=False)
    dm = FashionMNISTDataModule(data_dir="/tmp/fmnist_item7", batch_size=128, val_size=1000, augment=False)
    trainer = pl.Trainer(max_epochs=epochs, limit_train_batches=batches, limit_val_batches=0, accelerator="cpu",
                         devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.fit(module, dm)
    return module


def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    torch.manual_seed(0)
    report, _ = AttackSuite([PGD(eps=EPS, steps=20, step_size=EPS / 4, name="pgd20")],
                            sanity_checks=False).evaluate(model.eval(), x, y, warn=False)
    return report.clean_acc, report.worst_case_acc


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--batches", type=int, default=40)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--test", type=int, default=500)
    p.add_argument("--teacher-epochs", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(1)
    dm = FashionMNISTDataModule(data_dir="/tmp/fmnist_item7", batch_size=128, val_size=1000)
    dm.prepare_data()
    dm.setup("test")
    xs, ys = zip(*[dm.test_dataset[i] for i in range(args.test)])
    x, y = torch.stack(xs), torch.tensor(ys)
    net = dict(arch="small_cnn", in_channels=1, optim=ADAM)
    attack = PGD(eps=EPS, steps=3, step_size=EPS / 2, bn_mode="train")
    rows, teachers = [], {}
    for name, factor in (("teacher (PGD-3 AT, width 16)", 1), ("teacher x3 epochs", 3)):
        t0 = time.time()
        teacher = fit(AdvTraining(**net, arch_kwargs={"width": 16}, objective=PGDAT(attack=attack)),
                      args.teacher_epochs * factor, args.batches)
        teachers[factor] = teacher.model
        rows.append((name, *evaluate(teacher.model, x, y), time.time() - t0))
    student = dict(**net, arch_kwargs={"width": 8})
    runs = [("free AT, m=4", None, Free(eps=EPS, replays=4)),
            ("Fast-ARD (thesis: delta ascends ARD loss, t=30)", 1, FastARD(eps=EPS, replays=4)),
            ("Fast-ARD, delta ascends student CE (Alg. 2 text)", 1, FastARD(eps=EPS, replays=4, perturbation_loss="ce")),
            ("Fast-ARD, t=1", 1, FastARD(eps=EPS, replays=4, temperature=1.0)),
            ("Fast-ARD, teacher x3 epochs", 3, FastARD(eps=EPS, replays=4))]
    for name, teacher_key, objective in runs:
        t0 = time.time()
        if teacher_key is None:
            module = AdvTraining(**student, objective=objective)
        else:
            module = KnowledgeDistillation(**student, teacher_arch="small_cnn", objective=objective)
            module.set_teacher(teachers[teacher_key])
        fit(module, args.epochs, args.batches)
        rows.append((name, *evaluate(module.model, x, y), time.time() - t0))
    print(f"\nFashion-MNIST, {args.batches} batches of 128 per epoch, students {args.epochs} epochs (m=4), "
          f"PGD-20 eps {EPS} on {args.test} test images\n")
    print("| model | clean % | PGD-20 % | s |\n|---|---|---|---|")
    for name, clean, robust, sec in rows:
        print(f"| {name} | {100 * clean:.1f} | {100 * robust:.1f} | {sec:.0f} |")


if __name__ == "__main__":
    main()
