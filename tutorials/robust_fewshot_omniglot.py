"""Tutorial: robust few-shot learning with adversarial querying (thesis chapter 5) on Omniglot.

A ProtoNet (learn2learn's prototypical classifier on a Conv-4 backbone) is meta-trained on the
minimal Omniglot splits vendored in ``datamodules/assets/omniglot`` (no download) with
``AdversarialQuerying``: in every task the query images are attacked by PGD through the learner
adapted on the clean support (Algorithm 5, objective ``AQ``). It is then tested on 5-way 5-shot
episodes of alphabets it never saw: clean and robust few-shot accuracy with 95% confidence
intervals, robust accuracy through the project's evaluator (the module's ``PGDEvaluation``, the
per-query worst case). ``--compare-natural`` also meta-trains the same learner without attacks
(objective ``MetaNatural``): it is as accurate and not robust.

    python tutorials/robust_fewshot_omniglot.py --compare-natural   # a few CPU minutes
    python tutorials/robust_fewshot_omniglot.py --tiny              # seconds (the test's settings)

The config version (28x28, 400 meta-steps, eps 16/255) is ``configs/aq_omniglot_minimal.yaml``.
"""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import lightning.pytorch as pl
import torch

from lightning_adv.attacks import PGD
from lightning_adv.datamodules.fewshot import ClassFolderFewShot
from lightning_adv.meta import HeadLearner
from lightning_adv.modules import AdversarialQuerying, OptimConfig
from lightning_adv.objectives import AQ, MetaNatural

OMNIGLOT = Path(__file__).resolve().parents[1] / "datamodules" / "assets" / "omniglot"
EPS = 0.1  # Linf; Omniglot strokes are near-binary, 0.1 is about 25 grey levels


def omniglot(steps: int, test_episodes: int, data_dir: str) -> ClassFolderFewShot:
    """5-way 5-shot tasks: meta-train on images_background_small1, test on the alphabets of small2."""
    return ClassFolderFewShot(
        train_path=str(OMNIGLOT / "images_background_small1.zip"),
        test_path=str(OMNIGLOT / "images_background_small2.zip"), data_dir=data_dir,
        ways=5, shots=5, queries=5, tasks_per_batch=2, train_episodes=2 * steps, val_episodes=0,
        test_episodes=test_episodes, test_shots=5, test_queries=5, eval_tasks_per_batch=10, image_size=20)


def meta_train_and_test(objective_name: str, steps: int, test_episodes: int, data_dir: str) -> dict:
    """Meta-train one learner for ``steps`` steps of 2 tasks, test it; returns {metric: {mean, ci95, episodes}}."""
    pl.seed_everything(0, verbose=False)
    objective = (AQ(attack=PGD(eps=EPS, steps=2, step_size=EPS, bn_mode="train"))  # queries attacked in training
                 if objective_name == "aq" else MetaNatural())
    module = AdversarialQuerying(
        arch="conv4", in_channels=1, image_size=20, arch_kwargs={"width": 32},
        learner=HeadLearner("protonet"), objective=objective,
        eval_attack=PGD(eps=EPS, steps=10, step_size=EPS / 4, name="pgd10"),
        optim=OptimConfig(optimizer="adam", lr=3e-3, weight_decay=0.0, scheduler="constant"))
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         default_root_dir=data_dir)
    dm = omniglot(steps, test_episodes, data_dir)
    trainer.fit(module, datamodule=dm)
    trainer.test(module, datamodule=dm, verbose=False)  # prints the module's results table
    return module.test_results


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", default=os.environ.get("LIGHTNING_ADV_TUTORIAL_TINY") == "1",
                   help="tiny settings (25 meta-steps, 10 test episodes); also LIGHTNING_ADV_TUTORIAL_TINY=1")
    p.add_argument("--compare-natural", action="store_true", help="also meta-train without attacks")
    p.add_argument("--data-dir", help="where the zips are unpacked (default: a temporary folder)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    steps, episodes = (25, 10) if args.tiny else (100, 40)
    runs = ["aq"] + (["natural"] if args.compare_natural else [])
    with tempfile.TemporaryDirectory(prefix="omniglot_minimal_") as tmp:
        for name in runs:
            r = meta_train_and_test(name, steps, episodes, args.data_dir or tmp)
            print(f"RESULT {name} clean_acc={r['acc']['mean']:.4f} robust_acc={r['robust_acc']['mean']:.4f} "
                  f"ci95={r['robust_acc']['ci95']:.4f} episodes={r['acc']['episodes']}")


if __name__ == "__main__":
    main()
