"""HessianEigenvalues and NTKSnapshot in a real 2-process DDP fit (gloo, CPU) through train.py."""
from __future__ import annotations

import json

import pytest

from helpers import fork_train_py

pytestmark = pytest.mark.ddp

CONFIG = """
seed_everything: 0
trainer:
  max_epochs: 1
  callbacks:
    - class_path: lightning_adv.callbacks.HessianEigenvalues
      init_args: {{num_samples: 101, batch_size: 32, iterations: 15}}
    - class_path: lightning_adv.callbacks.NTKSnapshot
      init_args: {{num_samples: 5}}
    - class_path: probes.hessian.HessianProbe
      init_args: {{out_dir: {out}}}
checkpoint: {{monitor: val/acc}}
model:
  class_path: lightning_adv.modules.Classifier
  init_args:
    arch: mlp
    num_classes: 10
    in_channels: 1
    arch_kwargs: {{input_size: 8, hidden: [16]}}
    optim: {{optimizer: sgd, lr: 0.1, momentum: 0.9, weight_decay: 0.0, scheduler: constant}}
data:
  class_path: lightning_adv.datamodules.DigitsDataModule
  init_args: {{batch_size: 64}}
"""


def test_hessian_callback_under_ddp_equals_the_single_process_computation(tmp_path) -> None:
    from lightning_adv.callbacks._analysis_common import fixed_sample
    from lightning_adv.datamodules import DigitsDataModule
    from lightning_adv.analysis import DatasetHessian, extreme_eigenvalues
    from lightning_adv.models import create_model, load_model_weights

    cfg = tmp_path / "hessian_ddp.yaml"
    cfg.write_text(CONFIG.format(out=tmp_path / "probe"))
    fork_train_py("fit", "--config", str(cfg), "--trainer.accelerator", "cpu", "--trainer.strategy", "ddp",
                 "--trainer.devices", "2", "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
                 "--trainer.default_root_dir", str(tmp_path))
    r0, r1 = (json.loads((tmp_path / "probe" / f"rank{r}.json").read_text()) for r in range(2))
    assert r0["world_size"] == 2 and (r0["shard"], r1["shard"]) == (51, 50)  # 101 examples, sharded
    assert [label for label, _ in r0["hessian"]] == ["start", "end"]
    for (_, a), (_, b) in zip(r0["hessian"], r1["hessian"]):  # every rank got the reduced numbers
        assert a == pytest.approx(b, rel=1e-9)
    assert r0["ntk_snapshots"] == 2 and r1["ntk_snapshots"] == 0  # rank zero only
    # the same statistics from the final weights in one process
    model = create_model("mlp", input_size=8, num_classes=10, in_channels=1, hidden=[16])
    load_model_weights(model, tmp_path / "checkpoints" / "last.ckpt")
    data = DigitsDataModule(batch_size=64)
    data.setup("fit")
    x, y = fixed_sample(data.train_dataset, 101, 0)
    op = DatasetHessian(model, [(x, y)])
    loss, grad = op.loss_and_gradient()
    eig = extreme_eigenvalues(op.hvp, op.dim, iterations=15)
    end = r0["hessian"][-1][1]
    assert end["loss"] == pytest.approx(loss, rel=1e-5)
    assert end["grad_norm"] == pytest.approx(float(grad.norm()), rel=1e-4)
    assert end["max_eig"] == pytest.approx(eig.largest, rel=1e-4)
    assert end["min_eig"] == pytest.approx(eig.smallest, rel=1e-3, abs=1e-6)
    assert end["loss"] < r0["hessian"][0][1]["loss"]
