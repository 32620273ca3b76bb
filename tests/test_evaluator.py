"""One evaluator (issue 10, item 3): PGDEvaluation is a preset of the attack suite, one metric scheme, few-shot
confidence intervals from the suite's records, the two callbacks together at test."""
from __future__ import annotations

import re
import warnings

import lightning.pytorch as pl
import pytest
import torch

from helpers import quiet_trainer
from lightning_adv.callbacks import AttackSuiteEvaluation, PGDEvaluation, gather_records
from lightning_adv.datamodules import DigitsDataModule
from lightning_adv.datamodules.fewshot import OmniglotFewShot
from lightning_adv.datamodules.fewshot_standins import write_fewshot_standin
from lightning_adv.attacks import FGSM, PGD, AttackSuite
from lightning_adv.meta import EpisodeAccuracy, episode_accuracy
from lightning_adv.modules import AdversarialQuerying, Classifier, OptimConfig
from lightning_adv.objectives import AQ

warnings.filterwarnings("ignore", category=UserWarning)
torch.set_num_threads(1)

#: every robustness key a callback may log: {stage}/robust_acc[_advtuned][/{attack}][_ci95], {stage}/acc[...]
KEY = re.compile(r"^(val|test)/(robust_acc(_advtuned)?(/[A-Za-z0-9_.]+)?|acc(_advtuned)?)(_ci95)?$")


def _classifier() -> Classifier:
    torch.manual_seed(0)
    return Classifier(arch="mlp", arch_kwargs={"input_size": 8}, num_classes=10, in_channels=1,
                      optim=OptimConfig(optimizer="adam", lr=1e-2, scheduler="constant", weight_decay=0))


def _deterministic_attacks() -> list[PGD]:
    # no random start: per-example results do not depend on the batch or the random stream
    return [PGD(eps=0.1, steps=5, step_size=0.03, random_start=False, name="pgd5"), FGSM(eps=0.1, name="fgsm")]


def test_pgd_evaluation_equals_the_suite_report_and_keys_follow_the_scheme(tmp_path):
    module = _classifier()
    dm = DigitsDataModule(batch_size=64, eval_batch_size=100)
    cb = PGDEvaluation(attacks=_deterministic_attacks(), num_images=0)
    trainer = quiet_trainer(tmp_path, callbacks=[cb], max_epochs=2, limit_train_batches=5)
    trainer.fit(module, dm)
    trainer.test(module, dm, verbose=False)
    m = trainer.callback_metrics
    robust_keys = [k for k in m if "robust" in k or k.startswith(("val/acc", "test/acc"))]
    assert robust_keys and all(KEY.match(k) for k in robust_keys), robust_keys
    assert not [k for k in m if "suite/" in k or re.search(r"robust_acc_[a-z]", k)]  # no old scheme left
    # the suite's own report (default run-all: only clean-correct points attacked) on the same test set
    dm.setup("test")
    x = torch.stack([dm.test_dataset[i][0] for i in range(len(dm.test_dataset))])
    y = torch.tensor([int(dm.test_dataset[i][1]) for i in range(len(dm.test_dataset))])
    module.eval()
    report, _ = AttackSuite(_deterministic_attacks(), cascade=False, sanity_checks=False).evaluate(
        module, x, y, batch_size=37, warn=False)
    ours = cb.reports["test"]
    assert ours.n == report.n == len(y)
    assert ours.clean_acc == pytest.approx(report.clean_acc) == pytest.approx(float(m["test/acc"]), abs=1e-6)
    for a, b in zip(ours.rows, report.rows):
        assert a.name == b.name and a.robust_acc == pytest.approx(b.robust_acc, abs=1e-9)
        assert float(m[f"test/robust_acc/{a.name}"]) == pytest.approx(b.robust_acc, abs=1e-6)
        assert a.n_fooled == b.n_fooled
    assert float(m["test/robust_acc"]) == pytest.approx(report.worst_case_acc, abs=1e-6)
    assert report.worst_case_acc < report.clean_acc  # the attacks do something on this model


def test_both_callbacks_at_test_log_one_worst_case_over_all_attacks(tmp_path):
    module = _classifier()
    dm = DigitsDataModule(batch_size=64, eval_batch_size=64)
    pgd_cb = PGDEvaluation(attacks=_deterministic_attacks(), num_images=0)
    suite_cb = AttackSuiteEvaluation([FGSM(eps=0.1, name="fgsm"), PGD(eps=0.1, steps=3, name="pgd3")],
                                     cascade=False, output_dir=str(tmp_path), print_table=False)
    trainer = quiet_trainer(tmp_path, callbacks=[pgd_cb, suite_cb], limit_test_batches=2)
    trainer.test(module, dm, verbose=False)
    # PGDEvaluation handed its attacks over: the same 'fgsm' runs once, pgd5 first, then the suite's own
    assert "test" not in pgd_cb.reports
    report = suite_cb.report
    assert report is not None and [r.name for r in report.rows] == ["pgd5", "fgsm", "pgd3"]
    m = trainer.callback_metrics
    assert float(m["test/robust_acc"]) == pytest.approx(report.worst_case_acc)
    assert report.worst_case_acc <= min(r.robust_acc for r in report.rows) + 1e-9
    # the same name for another attack is rejected before anything runs
    clash = AttackSuiteEvaluation([PGD(eps=0.2, steps=3, name="fgsm")], print_table=False)
    with pytest.raises(ValueError, match="fgsm"):
        quiet_trainer(tmp_path, callbacks=[PGDEvaluation(attacks=_deterministic_attacks()), clash]).test(
            _classifier(), dm)


def test_attack_misclassified_attacks_every_point_and_never_counts_it_robust():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    x, y = torch.rand(32, 1, 8, 8), torch.randint(0, 10, (32,))
    attacks = [PGD(eps=0.05, steps=2, random_start=False, name="pgd2")]
    rec = AttackSuite(attacks, cascade=False, sanity_checks=False, attack_misclassified=True).run_batch(model, x, y)
    assert rec["pgd2/ran"].all() and not rec["clean"].all()
    assert not (rec["pgd2/correct"] & ~rec["clean"]).any() and not (rec["pgd2/fooled"] & ~rec["clean"]).any()
    base = AttackSuite(attacks, cascade=False, sanity_checks=False).run_batch(model, x, y)
    assert torch.equal(base["pgd2/correct"], rec["pgd2/correct"]) and torch.equal(base["pgd2/ran"], base["clean"])
    with pytest.raises(ValueError, match="cascade"):
        AttackSuite(attacks, cascade=True, attack_misclassified=True)
    # one process: gather_records only de-duplicates
    doubled = {k: torch.cat([v, v]) for k, v in rec.items()}
    assert torch.equal(gather_records(pl.Trainer(accelerator="cpu", logger=False), doubled)["index"],
                       torch.arange(32))


def test_episode_accuracy_agrees_with_episode_metric():
    g = torch.Generator().manual_seed(0)
    episodes, queries = 37, 15
    correct = torch.rand(episodes * queries, generator=g) < torch.rand(episodes, generator=g).repeat_interleave(queries)
    episode = torch.arange(episodes).repeat_interleave(queries) * 7 + 3  # any ids
    perm = torch.randperm(correct.numel(), generator=g)  # records come in any order
    mean, ci, n = episode_accuracy(correct[perm], episode[perm])
    metric = EpisodeAccuracy()
    metric.update(correct.view(episodes, queries).float().mean(1))
    ref_mean, ref_ci, ref_n = metric.compute()
    assert n == int(ref_n) == episodes
    assert mean == pytest.approx(float(ref_mean), abs=1e-6) and ci == pytest.approx(float(ref_ci), abs=1e-6)
    assert ci > 0


@pytest.fixture(scope="module")
def omniglot_standin(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluator_fs") / "omniglot"
    write_fewshot_standin(root, "omniglot")
    return root


def test_few_shot_keys_and_confidence_intervals_come_from_the_suite(omniglot_standin, tmp_path):
    pl.seed_everything(0, verbose=False)
    module = AdversarialQuerying(arch="conv4", in_channels=1, image_size=28, arch_kwargs={"width": 8},
                                 objective=AQ(PGD(eps=0.1, steps=1, step_size=0.1, bn_mode="train")),
                                 eval_attack=PGD(eps=0.1, steps=2, step_size=0.05),
                                 test_attacks=[FGSM(eps=0.1, name="fgsm")])
    dm = OmniglotFewShot(data_dir=str(omniglot_standin), ways=3, shots=2, queries=2, tasks_per_batch=2,
                         train_episodes=4, val_shots=1, test_shots=2, test_queries=3, val_episodes=2,
                         test_episodes=6, eval_tasks_per_batch=2, val_classes=3)
    trainer = quiet_trainer(tmp_path, max_epochs=1, limit_train_batches=1, limit_val_batches=1)
    trainer.fit(module, datamodule=dm)
    m = dict(trainer.callback_metrics)
    trainer.test(module, datamodule=dm, verbose=False)
    cb = next(c for c in trainer.callbacks if isinstance(c, PGDEvaluation))  # attached by the module
    assert [a.label for a in cb.test_suite.attacks] == ["pgd2_linf_eps25.5", "fgsm"]
    m.update(trainer.callback_metrics)
    keys = [k for k in m if k.startswith(("val/", "test/")) and ("acc" in k)]
    assert all(KEY.match(k) for k in keys), keys
    for k in ("val/robust_acc", "val/robust_acc_ci95", "test/robust_acc", "test/robust_acc_ci95",
              "test/robust_acc/fgsm", "test/robust_acc/fgsm_ci95", "test/acc", "test/acc_ci95"):
        assert k in m, (k, sorted(m))
    assert "val/robust_acc/fgsm" not in m  # a test attack only
    res = module.test_results
    assert res["robust_acc"]["episodes"] == res["acc"]["episodes"] == 6
    assert float(m["test/robust_acc_ci95"]) == pytest.approx(res["robust_acc"]["ci95"], abs=1e-6)
    assert res["robust_acc"]["mean"] <= min(res["robust_acc/fgsm"]["mean"], res["acc"]["mean"]) + 1e-6
    assert float(m["test/robust_acc"]) == pytest.approx(res["robust_acc"]["mean"], abs=1e-6)
