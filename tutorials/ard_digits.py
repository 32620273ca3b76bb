"""Tutorial: adversarially robust distillation (ARD, thesis chapter 4) on scikit-learn's digits.

1. A teacher (small CNN) is trained adversarially: ``AdvTraining`` with the ``PGDAT`` objective.
2. A smaller student learns from it with ``KnowledgeDistillation`` and the ``ARD`` objective: the
   student, attacked by PGD, matches the teacher's temperature-softened output on the clean image.
3. Both are tested through the project's evaluator (``PGDEvaluation``, the light preset of
   ``AttackSuite``): clean accuracy ``test/acc`` and the per-example worst case ``test/robust_acc``.

Everything goes through Lightning's Trainer with the project's modules, as ``train.py`` does with
``configs/ard_*.yaml`` on CIFAR (see docs/distillation.md). Digits ship with scikit-learn: no download.

    python tutorials/ard_digits.py            # a few CPU minutes
    python tutorials/ard_digits.py --tiny     # seconds (the test's settings)
"""
from __future__ import annotations

import argparse
import os
import tempfile

import lightning.pytorch as pl
import torch

from lightning_adv.attacks import FGSM, PGD
from lightning_adv.callbacks import PGDEvaluation
from lightning_adv.datamodules import DigitsDataModule
from lightning_adv.modules import AdvTraining, KnowledgeDistillation, OptimConfig
from lightning_adv.objectives import ARD, PGDAT

EPS = 0.15  # Linf radius on digits (the quickstart's)
ADAM = OptimConfig(optimizer="adam", lr=3e-3, weight_decay=0.0, scheduler="constant")
# The student: a larger step and temperature 4 (the thesis: SGD 0.1, t = 30 over 200 CIFAR epochs) so
# that a few digits epochs are enough to see it learn from the teacher's soft labels alone (alpha 1).
STUDENT_ADAM = OptimConfig(optimizer="adam", lr=1e-2, weight_decay=0.0, scheduler="constant")


def trainer(epochs: int, limit_batches: float | int, root: str) -> pl.Trainer:
    """A CPU Trainer without logger or checkpoints; validation is skipped (nothing is selected)."""
    return pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, default_root_dir=root,
                      limit_train_batches=limit_batches, limit_val_batches=0, num_sanity_val_steps=0)


def test_accuracy(module: pl.LightningModule, limit_batches: float | int, root: str) -> dict[str, float]:
    """Clean and robust test accuracy through the evaluator: PGD-20 and FGSM, worst case per example."""
    evaluator = PGDEvaluation(attacks=[PGD(eps=EPS, steps=20, step_size=EPS / 8, name="pgd20"),
                                       FGSM(eps=EPS, name="fgsm")],
                              on_validation=False, num_images=0)
    t = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                   enable_model_summary=False, default_root_dir=root, callbacks=[evaluator],
                   limit_test_batches=limit_batches)
    (metrics,) = t.test(module, DigitsDataModule(batch_size=64), verbose=False)
    return {k: float(v) for k, v in metrics.items()}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", default=os.environ.get("LIGHTNING_ADV_TUTORIAL_TINY") == "1",
                   help="tiny settings (4 + 4 epochs, 2 test batches of 64); also LIGHTNING_ADV_TUTORIAL_TINY=1")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    epochs, limit_train, limit_test = (4, 1.0, 2) if args.tiny else (10, 1.0, 1.0)
    with tempfile.TemporaryDirectory(prefix="ard_digits_") as root:  # teacher weights, Trainer files
        # 1. the teacher: PGD adversarial training (Madry et al.), PGD-5 in train mode as the authors' code
        pl.seed_everything(0, verbose=False)
        teacher = AdvTraining(arch="small_cnn", in_channels=1, optim=ADAM,
                              objective=PGDAT(PGD(eps=EPS, steps=5, step_size=EPS / 2.5, bn_mode="train")))
        trainer(epochs, limit_train, root).fit(teacher, DigitsDataModule(batch_size=64))
        teacher_path = os.path.join(root, "teacher.pt")
        torch.save(teacher.model.state_dict(), teacher_path)  # a raw state dict; a .ckpt of train.py works too

        # 2. the ARD student: a narrower CNN, attacked during training, matching the teacher's soft labels
        pl.seed_everything(0, verbose=False)
        student = KnowledgeDistillation(
            arch="small_cnn", arch_kwargs={"width": 8}, in_channels=1, optim=STUDENT_ADAM,
            teacher_arch="small_cnn", teacher_checkpoint=teacher_path,  # loaded with weights_only=True, frozen
            objective=ARD(temperature=4.0, alpha=1.0, attack=PGD(eps=EPS, steps=5, step_size=EPS / 2.5, bn_mode="train")))
        trainer(epochs, limit_train, root).fit(student, DigitsDataModule(batch_size=64))

        # 3. both through the evaluator
        for name, module in (("teacher", teacher), ("ARD student", student)):
            m = test_accuracy(module, limit_test, root)
            print(f"{name:12s} test/acc {m['test/acc']:.3f}  test/robust_acc {m['test/robust_acc']:.3f}  "
                  f"(pgd20 {m['test/robust_acc/pgd20']:.3f}, fgsm {m['test/robust_acc/fgsm']:.3f})")
            tag = "teacher" if name == "teacher" else "student"
            print(f"RESULT {tag} clean_acc={m['test/acc']:.4f} robust_acc={m['test/robust_acc']:.4f}")


if __name__ == "__main__":
    main()
