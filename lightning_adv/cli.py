"""The command line: ``python train.py {fit,validate,test} --config configs/X.yaml [--a.b value ...]``.

A LightningCLI in subclass mode: the config names the LightningModule (``model.class_path``)
and the LightningDataModule (``data.class_path``); every constructor argument, every
Trainer argument and the checkpoint callback (``checkpoint.*``) can be overridden on the
command line. Defaults added here:

* TensorBoard logger under ``runs/`` (``tensorboard --logdir runs``);
* ``checkpoint``: :class:`callbacks.RobustCheckpoint` keeping ``last.ckpt`` and the best
  checkpoint by ``val/robust_acc`` (set ``--checkpoint.monitor val/acc`` for natural runs);
* ``trainer.inference_mode=false`` so ``test`` runs under ``no_grad`` (attacks re-enable
  autograd either way; this also keeps BN buffers ordinary tensors);
* checkpoints given with ``--ckpt_path`` load with ``weights_only=True``;
* ``seed_everything: 0``.

Resume a stopped or killed run with ``--ckpt_path <run>/checkpoints/last.ckpt``.
"""
from __future__ import annotations

from typing import Any, Optional

from pathlib import Path

import torch
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningCLI

from callbacks.checkpoint import RobustCheckpoint

__all__ = ["AdvLightningCLI", "main", "TRAINER_DEFAULTS"]

#: modules whose pre-objectives checkpoints need scripts/convert_checkpoint.py (issue 11)
LEGACY_CHECKED = ("AdvTraining", "KnowledgeDistillation", "ARD", "FastARD", "AdversarialQuerying")

TRAINER_DEFAULTS: dict[str, Any] = {
    "logger": {
        "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
        "init_args": {"save_dir": "runs", "name": "default"},
    },
    "inference_mode": False,
    "default_root_dir": "runs",
}


class AdvLightningCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: Any) -> None:
        parser.add_lightning_class_args(RobustCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/robust_acc",
                "checkpoint.mode": "max",
                "checkpoint.save_last": True,
                "checkpoint.save_top_k": 1,
                "checkpoint.filename": "best-epoch{epoch:03d}",
                "checkpoint.auto_insert_metric_name": False,
            }
        )

    def _parse_ckpt_path(self) -> None:
        """A checkpoint written before objectives were parts: say how to convert it (not a parser error)."""
        sub = self.config.get("subcommand")
        path = self.config[sub].get("ckpt_path") if sub else None
        if path and Path(path).is_file():
            from lightning_adv.modules.objective_training import legacy_checkpoint_error

            hparams = torch.load(path, weights_only=True, map_location="cpu").get("hyper_parameters") or {}
            cls = str(hparams.get("_class_path", "module")).rsplit(".", 1)[-1]
            msg = legacy_checkpoint_error(hparams, cls) if cls in LEGACY_CHECKED else None
            if msg:
                raise ValueError(f"ckpt_path={path}: {msg}")
        super()._parse_ckpt_path()

    def _weights_only(self) -> None:
        cfg = self.config_init[self.subcommand]
        if cfg.get("weights_only") is None:
            cfg["weights_only"] = True

    def before_fit(self) -> None:
        self._weights_only()

    def before_validate(self) -> None:
        self._weights_only()

    def before_test(self) -> None:
        self._weights_only()


def main(args: Optional[list[str]] = None, run: bool = True) -> AdvLightningCLI:
    return AdvLightningCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        trainer_defaults=TRAINER_DEFAULTS,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
    )
