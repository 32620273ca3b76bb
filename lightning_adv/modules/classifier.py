"""Natural training of a registered architecture: the base every classifier module shares."""
from __future__ import annotations

from typing import Any, Optional

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.classification import MulticlassAccuracy

from ..models import create_model, load_model_weights
from .compute import ComputeConfig, strip_compile_prefix
from .epoch_scalars import EpochScalars
from .optim import OptimConfig, build_optimizer, build_scheduler
from .regularizers import Regularizer, coerce_regularizer
from ..validation import check_real

__all__ = ["BaseClassifier", "Classifier", "hard_labels"]


def hard_labels(y: Tensor) -> Tensor:
    """Class indices of ``y``: itself for integer labels, the argmax of soft labels ``(B, C)``
    (CutMix / MixUp batches; the accuracy of a mixed batch is measured against its dominant class)."""
    return y.argmax(dim=-1) if y.is_floating_point() and y.dim() == 2 else y


class BaseClassifier(pl.LightningModule):
    """What every classifier module shares: a registered architecture, its optimiser, validation and test.

    :class:`Classifier` trains it on clean data; ``AdvTraining``, ``KnowledgeDistillation`` and
    ``CertifiedTraining`` hand its batches to an objective. Their constructors take their own
    arguments and pass the rest (``**kwargs``) to this one, so the command line shows these once.
    Images come in [0, 1]; the model normalises them in its first layer (``mean``/``std``,
    none by default as in the thesis authors' code).

    Args:
        arch: registered model name (``lightning_adv.models.list_models()``).
        num_classes: output classes; must match the datamodule.
        in_channels: image channels; must match the datamodule.
        mean: per-channel normalisation mean inside the model (None: identity).
        std: per-channel normalisation std inside the model (None: identity).
        arch_kwargs: extra keyword arguments of the architecture (e.g. ``width``).
        optim: optimiser and LR schedule (:class:`OptimConfig`).
        init_weights: optional path of weights to start from (a checkpoint of this
            project or a raw / TRADES-format state dict), loaded with ``weights_only=True``.
        regularizer: optional parameter regulariser (e.g. :class:`NormBias`), applied as
            a gradient right before each optimiser step (see ``modules/regularizers.py``).
        compute: memory format (``channels_last``) and ``torch.compile`` of the backbone
            (:class:`~lightning_adv.modules.compute.ComputeConfig`, ``docs/precision.md``);
            mixed precision is the Trainer's ``precision``.
        step_logging: also log the training loss of every step (``train/loss_step`` beside
            ``train/loss_epoch``) through ``self.log`` and update the training metrics per step,
            as before issue 22. Default off: the training scalars are summed on the device and
            logged once per epoch (``modules/epoch_scalars.py``; the same epoch values, no
            host work or device sync per step; docs/logging.md).

    Logged: ``train/loss``, ``train/acc``, ``val/loss``, ``val/acc``, ``test/loss``,
    ``test/acc``, ``lr``, ``train/param_norm`` (per epoch); with a regulariser also
    ``train/regularizer``.
    """

    def __init__(
        self,
        arch: str = "small_cnn",
        num_classes: int = 10,
        in_channels: int = 3,
        mean: Optional[list[float]] = None,
        std: Optional[list[float]] = None,
        arch_kwargs: Optional[dict[str, Any]] = None,
        optim: OptimConfig = OptimConfig(),
        init_weights: Optional[str] = None,
        regularizer: Optional[Regularizer] = None,
        compute: ComputeConfig = ComputeConfig(),
        step_logging: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(step_logging, bool):
            raise ValueError(f"step_logging must be true or false, got step_logging={step_logging!r}")
        self.step_logging = step_logging
        self._epoch_scalars = EpochScalars()
        self._batch_size = 0
        compute = ComputeConfig.coerce(compute)
        self.compute_cfg = compute
        optim = OptimConfig.coerce(optim)
        self.optim_cfg = optim
        self.regularizer = coerce_regularizer(regularizer)
        # hparams hold only primitives, so checkpoints load with weights_only=True; they hold the arguments of
        # every constructor up the chain (the subclass' own and these), which LightningCLI re-parses with the
        # class (`train.py test --ckpt_path`)
        self.save_hyperparameters(ignore=["optim", "regularizer", "compute"])
        self.hparams["optim"] = optim.to_dict()
        self.hparams["compute"] = compute.to_dict()
        self.hparams["regularizer"] = self.regularizer.to_dict() if self.regularizer is not None else None
        self.model = create_model(arch, num_classes=num_classes, in_channels=in_channels, mean=mean, std=std,
                                  **(arch_kwargs or {}))
        if init_weights:
            load_model_weights(self.model, init_weights)
        compute.check_model(self.model, arch)
        compute.apply(self.model)  # in place: state-dict keys stay the eager model's
        self.num_classes = num_classes
        # training metrics skip torchmetrics' argument checks (a device sync per update)
        self.train_acc = MulticlassAccuracy(num_classes, average="micro", validate_args=False)
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")

    # ------------------------------------------------------------------ basics
    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def setup(self, stage: str) -> None:
        """Check the model against the data (and compile against the device) before any step runs."""
        if self._trainer is not None:
            self.compute_cfg.check_device(self.trainer.strategy.root_device.type)
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is None:
            return
        dm_classes = getattr(dm, "num_classes", None)
        if dm_classes is not None and dm_classes != self.hparams.num_classes:
            raise ValueError(
                f"model.num_classes={self.hparams.num_classes} but the data ({type(dm).__name__}) has "
                f"{dm_classes} classes; set --model.num_classes {dm_classes}"
            )
        shape = getattr(dm, "input_shape", None)
        self.compute_cfg.check_input_shape(shape, type(dm).__name__)
        if shape is not None and shape[0] != self.hparams.in_channels:
            raise ValueError(
                f"model.in_channels={self.hparams.in_channels} but the data ({type(dm).__name__}) has "
                f"{shape[0]}-channel images; set --model.in_channels {shape[0]}"
            )

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Accept weights saved from a ``torch.compile(model)`` wrapper (keys with ``_orig_mod.``)."""
        if isinstance(checkpoint.get("state_dict"), dict):
            strip_compile_prefix(checkpoint["state_dict"])
        super().on_load_checkpoint(checkpoint)

    def on_train_epoch_start(self) -> None:
        """Log the learning rate once per epoch (a per-step log costs a host-device copy)."""
        self._epoch_scalars.reset()
        opt = self.optimizers(use_pl_optimizer=False)
        if isinstance(opt, list):
            opt = opt[0]
        self.log("lr", float(opt.param_groups[0]["lr"]), on_step=False, on_epoch=True)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """At the epoch's last batch, log its training scalars: before the callbacks' ``on_train_epoch_end``
        (which run ahead of the module's), where ``on_epoch`` values logged in a step are read too."""
        if self._trainer is not None and self.trainer.fit_loop.epoch_loop._is_training_done:
            self._epoch_scalars.flush(self)

    def on_train_epoch_end(self) -> None:
        """Log the parameter norm (figure 6.2 right, section 6.3) and what an epoch cut short left."""
        self._epoch_scalars.flush(self)
        with torch.no_grad():
            sq = sum(p.detach().float().square().sum() for p in self.model.parameters() if p.requires_grad)
        self.log("train/param_norm", torch.as_tensor(sq).sqrt(), on_step=False, on_epoch=True)

    def on_before_optimizer_step(self, optimizer: Any) -> None:
        """Add the regulariser's gradient (after DDP's gradient averaging and AMP's unscaling)."""
        if self.regularizer is None:
            return
        value, _norm = self.regularizer.add_gradient_([p for p in self.model.parameters() if p.requires_grad])
        self._log_epoch_mean("train/regularizer", value)

    # ------------------------------------------------------------------ training scalars
    def _log_train_loss(self, loss: Tensor) -> None:
        """``train/loss``: per step and epoch with ``step_logging``, else the epoch mean only."""
        if self.step_logging:
            self.log("train/loss", loss.detach(), on_step=True, on_epoch=True)
        else:
            self._epoch_scalars.mean("train/loss", loss, self._batch_size)

    def _log_epoch_mean(self, name: str, value: Tensor) -> None:
        """A scalar of the current batch whose epoch mean is logged (``train/trades_kl``, ...)."""
        if self.step_logging:
            self.log(name, value, on_step=False, on_epoch=True)
        else:
            self._epoch_scalars.mean(name, value, self._batch_size)

    def _log_accuracy(self, name: str, metric: MulticlassAccuracy, logits: Tensor, y: Tensor) -> None:
        """Epoch accuracy ``name`` of ``logits`` (``metric`` holds it with ``step_logging``)."""
        if self.step_logging:
            metric.update(logits.detach(), hard_labels(y))
            self.log(name, metric, on_step=False, on_epoch=True, prog_bar=True)
        else:
            self._epoch_scalars.accuracy(name, logits, hard_labels(y), prog_bar=True)

    def _log_clean_acc(self, logits: Tensor, y: Tensor) -> None:
        """Accumulate and log ``train/acc`` (epoch level) from logits on clean inputs."""
        self._log_accuracy("train/acc", self.train_acc, logits, y)

    def _shared_eval_step(self, batch: Any, stage: str) -> Tensor:
        x, y = batch
        logits = self.model(x)
        loss = F.cross_entropy(logits, y)
        metric = self.val_acc if stage == "val" else self.test_acc
        metric(logits, y)
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, sync_dist=True)
        self.log(f"{stage}/acc", metric, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._shared_eval_step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._shared_eval_step(batch, "test")

    # ------------------------------------------------------------------ optim
    def configure_optimizers(self) -> Any:
        optimizer = build_optimizer(self.model.parameters(), self.optim_cfg)
        max_epochs = self.trainer.max_epochs if self._trainer is not None else None
        scheduler = build_scheduler(optimizer, self.optim_cfg, max_epochs)
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}


class Classifier(BaseClassifier):
    """Image classifier trained on clean data (the natural baseline of every table).

    Args (besides :class:`BaseClassifier`'s):
        train_temperature: ``T`` > 0 of the training loss, ``CE(softmax(logits / T), y)``
            (default 1: plain cross-entropy). The teacher of defensive distillation
            (Papernot et al. 2016; ``docs/defensive-distillation.md``) is trained at
            ``T = 100``; validation, test and ``forward`` always use the raw logits
            (``T = 1``), which is how the distilled network is deployed and attacked.
        noise_sigma: train on ``x + N(0, noise_sigma^2)`` (pixel units, no clamping): the base
            classifier of randomized smoothing (Cohen et al. 2019, ``lightning_adv.certify``).
            0 (default) is clean training.

    Logged: :class:`BaseClassifier`'s.
    """

    def __init__(self, train_temperature: float = 1.0, noise_sigma: float = 0.0, **kwargs: Any) -> None:
        noise_sigma = check_real("noise_sigma", noise_sigma, minimum=0.0, hint="the Gaussian noise std in [0, 1] pixel units")
        train_temperature = check_real("train_temperature", train_temperature, positive=True,
                                       hint="1: plain cross-entropy; defensive distillation: 100")
        super().__init__(**kwargs)
        self.noise_sigma = float(noise_sigma)
        self.train_temperature = float(train_temperature)

    def soft_label_refusal(self) -> Optional[str]:
        """Why this module cannot train on soft labels (``data.mix``), or None when it can: the natural
        cross-entropy takes class probabilities as they are."""
        return None

    # ------------------------------------------------------------------ steps
    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y = batch
        if self.noise_sigma:
            x = x + self.noise_sigma * torch.randn_like(x)
        self._batch_size = x.shape[0]
        logits = self.model(x)
        loss = self.objective(logits, x, y)
        self._log_train_loss(loss)
        self._log_clean_acc(logits, y)
        return loss

    def objective(self, logits: Tensor, x: Tensor, y: Tensor) -> Tensor:
        """The training loss of a clean batch given the model's ``logits`` on it: the cross-entropy of
        ``logits / train_temperature``."""
        if self.train_temperature != 1.0:
            logits = logits / self.train_temperature
        return F.cross_entropy(logits, y)
