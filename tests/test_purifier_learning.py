"""Learning on real data (the minimal Omniglot splits): pre-processing defenses are no substitute for
adversarial querying (thesis section 5.5, table 5.12's claim).

On images_background_small1 (meta-training characters, 20x20): a natural and an adversarially queried
ProtoNet (Conv-4, as tests/test_fewshot_learning.py), DefenseGAN's generator (DCGAN loss, a narrow
generator: the test's time budget) and the SR defense's SRResNet, all trained through Lightning and
reloaded from their checkpoints with weights_only. On held-out alphabets (images_background_small2):
the natural learner behind each purifier keeps a clearly non-trivial clean accuracy, and under the
adaptive attack (BPDA through the purifier, EOT over DefenseGAN's restarts) its robust accuracy is
below the adversarially queried learner's; the defense-unaware number is reported next to it.
"""
from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch

from lightning_adv.callbacks import AttackSuiteEvaluation
from helpers import REPO, quiet_trainer
from lightning_adv.datamodules.fewshot import ClassFolderFewShot, MetaTrainClassification
from lightning_adv.attacks import PGD
from lightning_adv.defenses import PurifierUnaware
from lightning_adv.modules import AdversarialQuerying, GANTraining, OptimConfig, PurifiedFewShot, SRTraining
from lightning_adv.meta import HeadLearner
from lightning_adv.objectives import AQ, MetaNatural

pytestmark = pytest.mark.slow

OMNIGLOT = REPO / "datamodules" / "assets" / "omniglot"
EPS, SIZE = 0.1, 20


def _fewshot_data(root, test_episodes: int = 8) -> ClassFolderFewShot:
    dm = ClassFolderFewShot(train_path=str(OMNIGLOT / "images_background_small1.zip"),
                            test_path=str(OMNIGLOT / "images_background_small2.zip"), data_dir=str(root), ways=5,
                            shots=5, queries=5, tasks_per_batch=2, train_episodes=200, val_episodes=0,
                            test_episodes=test_episodes, test_shots=5, test_queries=5, eval_tasks_per_batch=1,
                            image_size=SIZE)
    dm.prepare_data()
    return dm


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("purified_omniglot")
    paths = {}
    for mode in ("natural", "aq"):
        pl.seed_everything(0, verbose=False)
        module = AdversarialQuerying(
            arch="conv4", in_channels=1, image_size=SIZE, arch_kwargs={"width": 32}, learner=HeadLearner("protonet"),
            objective=AQ(PGD(eps=EPS, steps=2, step_size=EPS, bn_mode="train")) if mode == "aq" else MetaNatural(),
            eval_attack=PGD(eps=EPS, steps=5, step_size=EPS / 2),
            optim=OptimConfig(optimizer="adam", lr=3e-3, weight_decay=0.0, scheduler="constant"))
        trainer = quiet_trainer(max_epochs=1, limit_val_batches=0)
        trainer.fit(module, datamodule=_fewshot_data(root / "omni"))
        paths[mode] = str(root / f"{mode}.ckpt")
        trainer.save_checkpoint(paths[mode])
    images = MetaTrainClassification(_fewshot_data(root / "omni"), batch_size=64, val_per_class=2)
    pl.seed_everything(0, verbose=False)
    gan = GANTraining(image_size=SIZE, latent_dim=32, gen_width=32, critic_width=32, loss="dcgan", critic_iters=1,
                      lr=2e-4, beta2=0.999)
    trainer = quiet_trainer(max_steps=1200, limit_val_batches=0)
    trainer.fit(gan, datamodule=images)
    paths["defensegan"] = str(root / "gan.ckpt")
    trainer.save_checkpoint(paths["defensegan"])
    pl.seed_everything(0, verbose=False)
    sr = SRTraining(image_size=SIZE, sr_width=16, sr_blocks=2, lr=2e-3)
    trainer = quiet_trainer(max_steps=150, limit_val_batches=0)
    trainer.fit(sr, datamodule=images)
    paths["sr"] = str(root / "sr.ckpt")
    trainer.save_checkpoint(paths["sr"])
    return root, paths


def _evaluate(root, learner_ckpt: str, purifier: str, purifier_ckpt) -> dict:
    pl.seed_everything(1, verbose=False)
    module = PurifiedFewShot(learner_ckpt, purifier, purifier_ckpt, adaptive=True, restarts=2, steps=30)
    suite = AttackSuiteEvaluation(
        attacks=[PurifierUnaware(PGD(eps=EPS, steps=5, step_size=EPS / 2), name="pgd5_unaware"),
                 PGD(eps=EPS, steps=5, step_size=EPS / 2, eot_samples=2, name="pgd5_bpda_eot2")],
        cascade=False, output_dir=str(root / f"report_{purifier}"), print_table=False)
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[suite])
    trainer.test(module, datamodule=_fewshot_data(root / "omni"), verbose=False)
    report = suite.report
    rows = {r.name: r.robust_acc for r in report.rows}
    return {"acc": module.test_results["acc"], "suite_clean": report.clean_acc, **rows,
            "flags": [f.check for f in report.flags]}


def test_purifiers_are_weaker_than_adversarial_querying_under_adaptive_attack(trained):
    root, paths = trained
    aq = _evaluate(root, paths["aq"], "none", None)
    natural = _evaluate(root, paths["natural"], "none", None)
    results = {name: _evaluate(root, paths["natural"], name, paths[name]) for name in ("sr", "defensegan")}
    print(f"\nnatural: {natural}\nAQ: {aq}\nSR defense: {results['sr']}\nDefenseGAN: {results['defensegan']}")
    assert aq["acc"] > 0.6 and aq["pgd5_bpda_eot2"] > natural["pgd5_bpda_eot2"] + 0.15, (aq, natural)
    for name, r in results.items():
        # the purifier keeps the natural learner clearly above chance (0.2) on clean held-out characters
        assert r["suite_clean"] > 0.4, (name, r)
        # the thesis' claim: under the adaptive attack it is less robust than adversarial querying
        assert r["pgd5_bpda_eot2"] < aq["pgd5_bpda_eot2"], (name, r, aq)
        # and the defense-unaware attack (the defense papers' protocol) never reports less robustness
        assert r["pgd5_unaware"] >= r["pgd5_bpda_eot2"] - 0.05, (name, r)
        # BPDA gives the suite a gradient through the purifier: no zero-gradient flag
        assert "zero_gradients" not in r["flags"], (name, r)
