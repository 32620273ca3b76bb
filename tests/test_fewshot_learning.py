"""Learning on real data (the minimal Omniglot splits): adversarial querying buys few-shot robustness.

ProtoNet on a small Conv-4 (32 channels, 20x20 images), meta-trained on
images_background_small1 and tested on the held-out alphabets of images_background_small2,
5-way 5-shot. The naturally meta-trained learner classifies well but collapses under PGD;
the adversarially queried one keeps far more robust accuracy.
"""
from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch

from helpers import REPO
from lightning_adv.datamodules.fewshot import ClassFolderFewShot
from lightning_adv.attacks import PGD
from lightning_adv.modules import AdversarialQuerying, OptimConfig
from lightning_adv.meta import HeadLearner
from lightning_adv.objectives import AQ, MetaNatural

pytestmark = pytest.mark.slow

OMNIGLOT = REPO / "datamodules" / "assets" / "omniglot"  # vendored minimal splits
EPS = 0.1  # strokes are near-binary; 0.1 is ~25 grey levels
STEPS = 100


@pytest.fixture(scope="module")
def minimal_omniglot(tmp_path_factory):
    train, test = OMNIGLOT / "images_background_small1.zip", OMNIGLOT / "images_background_small2.zip"
    assert train.is_file() and test.is_file(), f"the minimal Omniglot splits are expected in {OMNIGLOT}"
    dm = ClassFolderFewShot(train_path=str(train), test_path=str(test), data_dir=str(tmp_path_factory.mktemp("omni")),
                            ways=5, shots=5, queries=5, tasks_per_batch=2, train_episodes=2 * STEPS,
                            val_episodes=0, test_episodes=40, test_shots=5, test_queries=5,
                            eval_tasks_per_batch=10, image_size=20)
    dm.prepare_data()
    return dm


def _meta_train(dm, mode: str) -> dict:
    pl.seed_everything(0, verbose=False)
    torch.set_num_threads(1)
    attack = PGD(eps=EPS, steps=2, step_size=EPS, bn_mode="train")  # main rejects step_size > eps
    module = AdversarialQuerying(
        arch="conv4", in_channels=1, image_size=20, arch_kwargs={"width": 32}, learner=HeadLearner("protonet"),
        objective=AQ(attack=attack) if mode == "aq" else MetaNatural(),
        eval_attack=PGD(eps=EPS, steps=5, step_size=EPS / 2),
        optim=OptimConfig(optimizer="adam", lr=3e-3, weight_decay=0.0, scheduler="constant"))
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(module, datamodule=dm)
    assert trainer.global_step == STEPS
    trainer.test(module, datamodule=dm, verbose=False)
    return {k: v["mean"] for k, v in module.test_results.items()}


def test_adversarial_querying_keeps_robust_accuracy_on_held_out_alphabets(minimal_omniglot):
    natural = _meta_train(minimal_omniglot, "natural")
    robust = _meta_train(minimal_omniglot, "aq")
    print(f"natural: {natural}\nadversarially queried: {robust}")
    # natural meta-learning: well above chance (0.2) on unseen alphabets, and not robust
    assert natural["acc"] > 0.7, natural
    assert natural["robust_acc"] < 0.12, natural
    # adversarial querying: still learns, and keeps clearly more accuracy under the same attack
    assert robust["acc"] > 0.6, robust
    assert robust["robust_acc"] > natural["robust_acc"] + 0.15, (natural, robust)
