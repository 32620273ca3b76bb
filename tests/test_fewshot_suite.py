"""The attack suite (issue 6) on the few-shot module (issue 4): query sets attacked through the
learner adapted on the clean support, every query of every test episode reported once."""
from __future__ import annotations

import json
import warnings

import lightning.pytorch as pl
import pytest
import torch
import yaml

from lightning_adv.callbacks import AttackSuiteEvaluation
from helpers import REPO
from lightning_adv.datamodules.fewshot import OmniglotFewShot
from lightning_adv.datamodules.fewshot_standins import write_fewshot_standin
from lightning_adv.attacks import PGD, DeepFool, is_few_shot
from lightning_adv.cli import main
from lightning_adv.modules import AdversarialQuerying
from lightning_adv.meta import MAML, HeadLearner
from lightning_adv.objectives import AQ

warnings.filterwarnings("ignore", category=UserWarning)
TASKS = dict(ways=3, shots=2, queries=2, tasks_per_batch=2, train_episodes=4, val_shots=1, test_shots=2,
             test_queries=3, val_episodes=2, test_episodes=4, eval_tasks_per_batch=2, val_classes=3)


@pytest.fixture(scope="module")
def omniglot_standin(tmp_path_factory):
    root = tmp_path_factory.mktemp("fewshot_suite") / "omniglot"
    write_fewshot_standin(root, "omniglot")
    return root


@pytest.mark.parametrize("head", ["r2d2", "protonet", "maml"])
def test_suite_attacks_queries_through_the_adapted_learner(head, omniglot_standin, tmp_path):
    torch.set_num_threads(1)
    pl.seed_everything(0, verbose=False)
    learner = MAML(ways=3, steps=1, test_steps=2) if head == "maml" else HeadLearner(head)
    module = AdversarialQuerying(arch="conv4", in_channels=1, image_size=28, arch_kwargs={"width": 8},
                                 learner=learner, objective=AQ(PGD(eps=0.1, steps=2, step_size=0.05, bn_mode="train")),
                                 eval_attack=PGD(eps=0.1, steps=3, step_size=0.05))
    assert is_few_shot(module)
    dm = OmniglotFewShot(data_dir=str(omniglot_standin), **TASKS)
    seen_support: list[torch.Tensor] = []
    adapt = module.adapted_learner

    def spy(support_x, support_y):
        seen_support.append(support_x.detach().clone())
        return adapt(support_x, support_y)

    module.adapted_learner = spy  # type: ignore[method-assign]
    suite = AttackSuiteEvaluation(attacks=[PGD(eps=0.1, steps=5, step_size=0.04, name="pgd5"),
                                           DeepFool(norm="linf", steps=2, name="deepfool2")],
                                  cascade=False, output_dir=str(tmp_path), print_table=False)
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         accelerator="cpu", devices=1, callbacks=[suite], inference_mode=True)
    trainer.fit(module, datamodule=dm)
    seen_support.clear()  # validation adapted too (the module's PGDEvaluation); the test's supports follow
    trainer.test(module, datamodule=dm, verbose=False)

    report = suite.report
    assert report is not None
    # every query of every test episode, once
    assert report.n == TASKS["test_episodes"] * TASKS["ways"] * TASKS["test_queries"]
    # the suite's clean forward is the module's own evaluation path (same episodes, same adaptation)
    assert report.clean_acc == pytest.approx(module.test_results["acc"]["mean"], abs=1.0 / report.n + 1e-6)
    for row in report.rows:
        assert row.robust_acc <= report.clean_acc + 1e-9
    assert report.rows[0].max_norm is None or report.rows[0].max_norm <= 0.1 + 1e-6
    # the support sets the suite adapted on are the clean ones of the test episodes, in order
    dm.setup("test")
    clean_support = [sx for batch in dm.test_dataloader() for sx in module.episodes(batch)]
    assert len(seen_support) == len(clean_support) == TASKS["test_episodes"]
    for seen, (sx, _, _, _) in zip(seen_support, clean_support):
        assert torch.equal(seen, sx)
    data = json.loads((tmp_path / "attack_suite.json").read_text())
    # the module's eval_attack (its PGDEvaluation hands it over) runs first, then the suite's own attacks
    assert data["n"] == report.n and [r["name"] for r in data["rows"]] == ["pgd3_linf_eps25.5", "pgd5", "deepfool2"]


def test_table5_11_config_on_the_minimal_omniglot_config(tmp_path):
    """configs/eval_fewshot_table5_11.yaml added to aq_omniglot_minimal's test (budgets cut for CPU)."""
    raw = yaml.safe_load((REPO / "configs/eval_fewshot_table5_11.yaml").read_text())
    attacks = raw["trainer"]["callbacks"][0]["init_args"]["attacks"]
    assert [a["init_args"]["name"] for a in attacks] == ["deepfool2", "mifgsm10", "pgd20_r20", "autoattack"]
    assert attacks[0]["init_args"]["steps"] == 2 and "eps" not in attacks[0]["init_args"]  # DF: unbounded, 2 iters
    assert all(abs(a["init_args"]["eps"] - 8 / 255) < 1e-6 for a in attacks[1:])
    for a in attacks:
        if "restarts" in a["init_args"]:
            a["init_args"]["restarts"] = 2
        if a["class_path"].endswith("AutoAttack"):
            a["init_args"]["components"] = ["apgd-ce", "apgd-t"]
    small = tmp_path / "table5_11_small.yaml"
    small.write_text(yaml.safe_dump(raw))
    cli = main(["test", "--config", str(REPO / "configs/aq_omniglot_minimal.yaml"), "--config", str(small),
                "--data.data_dir", str(tmp_path / "data"), "--data.test_episodes", "2", "--data.test_queries", "3",
                "--data.eval_tasks_per_batch", "2", "--data.image_size", "20", "--model.image_size", "20",
                "--model.arch_kwargs", "{width: 8}", "--model.eval_attack.steps", "2",
                "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path),
                "--trainer.enable_progress_bar", "false"])
    cb = next(c for c in cli.trainer.callbacks if isinstance(c, AttackSuiteEvaluation))
    assert cb.report is not None and cb.report.n == 2 * 5 * 3
    assert (tmp_path / "table5_11.json").exists() and (tmp_path / "table5_11_examples.csv").exists()
    # Linf attacks at 8/255 form one threat model; unbounded DeepFool is reported but not in it. The module's
    # eval_attack (16/255 in this config) is handed to the suite and forms its own threat model
    assert list(cb.report.worst_case_by_threat) == ["linf_eps0.0627451", "linf_eps0.0313725"]
    assert [r.name for r in cb.report.rows][0] == "pgd2_linf_eps16"
