"""A trained few-shot learner behind a purifier (thesis section 5.5, table 5.12), for ``train.py test``.

``PurifiedFewShot`` holds a few-shot module (an ``AdversarialQuerying`` checkpoint, loaded with
``weights_only=True``) and a purifier (DefenseGAN or the SR defense, from their training
checkpoints; or none, for the table's undefended rows). It implements the attack suite's
:class:`~lightning_adv.attacks.FewShotLearnerModule` interface, so ``lightning_adv.callbacks.AttackSuiteEvaluation``
evaluates it like any few-shot module:

* ``adapted_learner(support_x, support_y)``: the support is purified, the learner adapted on it;
  the returned learner purifies its queries before classifying them. With ``adaptive=True`` its
  purifier is the BPDA-wrapped one (:func:`~lightning_adv.defenses.adaptive_purifier`): same forward,
  identity backward through the non-differentiable step, so the suite's gradient attacks (with
  ``eot_samples`` for DefenseGAN's random restarts) attack the whole pipeline. With
  ``adaptive=False`` the gradient autograd sees is the purifier's own (zero): the naive attack,
  which the suite's ``zero_gradients`` flag exposes.
* the learner's ``undefended`` attribute is the learner adapted on the *clean* support with no
  purifier: :class:`~lightning_adv.defenses.PurifierUnaware` attacks it, the defense papers' protocol.

``test_step`` logs the clean few-shot accuracy through the purifier (``test/acc``, with its 95% CI);
robust accuracy comes from the suite (the project's one evaluator).
"""
from __future__ import annotations

from typing import Any, Iterator, Optional

import lightning.pytorch as pl
import torch
from torch import Tensor, nn

from ..attacks import module_mode
from ..defenses import DefenseGAN, SRDefense, WaveletDenoise, adaptive_purifier, load_generator, load_sr_net
from ..meta import EpisodeAccuracy
from ..validation import load_weights_file
from .adversarial_querying import AdversarialQuerying
from .objective_training import legacy_checkpoint_error

__all__ = ["PurifiedFewShot", "PurifiedLearner", "PURIFIERS", "load_fewshot"]

PURIFIERS = ("defensegan", "sr", "none")


class PurifiedLearner(nn.Module):
    """``learner(purifier(query_x))``; ``undefended``: the learner adapted on the clean support."""

    def __init__(self, learner: nn.Module, purifier: Optional[nn.Module], undefended: nn.Module) -> None:
        super().__init__()
        self.learner, self.purifier, self.undefended = learner, purifier, undefended

    def forward(self, query_x: Tensor) -> Tensor:
        return self.learner(query_x if self.purifier is None else self.purifier(query_x))


def load_fewshot(path: str) -> tuple[AdversarialQuerying, dict[str, Any]]:
    """An ``AdversarialQuerying`` module from its Lightning checkpoint (``weights_only=True``), eval mode,
    and the checkpoint's hyperparameters."""
    ckpt = load_weights_file(path, "fewshot_checkpoint")
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "hyper_parameters" not in ckpt:
        raise ValueError(f"fewshot_checkpoint={path!r} is not a Lightning checkpoint of AdversarialQuerying (no "
                         f"state_dict / hyper_parameters); give the last.ckpt of an aq_* run")
    hp = dict(ckpt["hyper_parameters"])
    old = legacy_checkpoint_error(hp, "AdversarialQuerying")
    if old:
        raise ValueError(f"fewshot_checkpoint={path!r}: {old}")
    module = AdversarialQuerying(**{k: v for k, v in hp.items() if not k.startswith("_")})
    module.load_state_dict(ckpt["state_dict"])
    return module.eval(), hp


class PurifiedFewShot(pl.LightningModule):
    """Evaluate a few-shot learner behind DefenseGAN or the SR defense (nothing to train).

    Args:
        fewshot_checkpoint: the few-shot learner (``AdversarialQuerying`` checkpoint: natural for
            the defense rows of table 5.12).
        purifier: 'defensegan', 'sr' or 'none'.
        purifier_checkpoint: the ``GANTraining`` / ``SRTraining`` checkpoint (not with 'none').
        adaptive: BPDA through the purifier's non-differentiable step (the adaptive attack);
            ``false``: the purifier's own (zero) gradient.
        restarts, steps, projection_lr: DefenseGAN's R, L and step size (Samangouei et al.: 10, 200, 10).
        wavelet, wavelet_method, wavelet_sigma: the SR defense's denoiser (Mustafa et al.: 'db1',
            'BayesShrink', 0.04; soft thresholding).
    """

    def __init__(self, fewshot_checkpoint: str, purifier: str = "defensegan", purifier_checkpoint: Optional[str] = None,
                 adaptive: bool = True, restarts: int = 10, steps: int = 200, projection_lr: float = 10.0,
                 wavelet: str = "db1", wavelet_method: str = "BayesShrink",
                 wavelet_sigma: Optional[float] = 0.04) -> None:
        super().__init__()
        if purifier not in PURIFIERS:
            raise ValueError(f"purifier={purifier!r} must be one of {PURIFIERS}")
        if (purifier == "none") != (purifier_checkpoint is None):
            raise ValueError(f"purifier={purifier!r} with purifier_checkpoint={purifier_checkpoint!r}: the "
                             f"'defensegan' and 'sr' purifiers need their training checkpoint, 'none' takes none")
        # settings first (each raises a ValueError naming itself), then the files
        denoiser = WaveletDenoise(wavelet, wavelet_method, "soft", wavelet_sigma) if purifier == "sr" else None
        if purifier == "defensegan":
            DefenseGAN(nn.Identity(), latent_dim=1, restarts=restarts, steps=steps, lr=projection_lr)
        self.save_hyperparameters()
        self.fewshot, fewshot_hp = load_fewshot(fewshot_checkpoint)
        self.fewshot_shape = (int(fewshot_hp["in_channels"]), int(fewshot_hp["image_size"]), int(fewshot_hp["image_size"]))
        self.fewshot.requires_grad_(False)
        self.purifier: Optional[nn.Module] = None
        if purifier == "defensegan":
            assert purifier_checkpoint is not None
            self.purifier = DefenseGAN(load_generator(purifier_checkpoint), restarts=restarts, steps=steps,
                                       lr=projection_lr)
        elif purifier == "sr":
            assert purifier_checkpoint is not None
            self.purifier = SRDefense(load_sr_net(purifier_checkpoint), denoiser)
        if self.purifier is not None:
            self.purifier.requires_grad_(False)
            self.purifier.check_input_shape(self.fewshot_shape)
        self.attack_purifier = None if self.purifier is None else (
            adaptive_purifier(self.purifier) if adaptive else self.purifier)
        self.test_acc = EpisodeAccuracy()
        self.test_results: dict[str, float] = {}

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        shape = getattr(dm, "input_shape", None)
        if shape is not None and self.purifier is not None:
            # checker: the purifiers of lightning_adv.defenses have check_input_shape()
            self.purifier.check_input_shape(tuple(shape))  # type: ignore[operator]
        if shape is not None and tuple(shape) != self.fewshot_shape:
            raise ValueError(f"the few-shot checkpoint takes images of shape {self.fewshot_shape} but the data has "
                             f"shape {tuple(shape)}; set --data.image_size {self.fewshot_shape[1]}")

    # ------------------------------------------------------------------ the suite's interface
    def episodes(self, batch: Any) -> Iterator[tuple[Tensor, Tensor, Tensor, Tensor]]:
        return self.fewshot.episodes(batch)

    def purify(self, x: Tensor) -> Tensor:
        """The purifier's forward (no graph): what the defended learner sees."""
        if self.purifier is None:
            return x
        with torch.no_grad(), module_mode(self.purifier, "eval"):
            return self.purifier(x.detach())

    def adapted_learner(self, support_x: Tensor, support_y: Tensor) -> PurifiedLearner:
        """The defended learner (support and queries purified) with its undefended twin."""
        undefended = self.fewshot.adapted_learner(support_x, support_y)
        defended = undefended if self.purifier is None else self.fewshot.adapted_learner(self.purify(support_x),
                                                                                        support_y)
        return PurifiedLearner(defended, self.attack_purifier, undefended).eval()

    # ------------------------------------------------------------------ test
    def test_step(self, batch: Any, batch_idx: int) -> None:
        accs = []
        for sx, sy, qx, qy in self.episodes(batch):
            learner = self.adapted_learner(sx, sy)
            with torch.no_grad():
                accs.append((learner(qx).argmax(-1) == qy).float().mean())
        self.test_acc.update(torch.stack(accs))

    def on_test_epoch_end(self) -> None:
        mean, ci, n = self.test_acc.compute()
        self.test_acc.reset()
        self.log("test/acc", mean)
        self.log("test/acc_ci95", ci)
        self.test_results = {"acc": float(mean), "ci95": float(ci), "episodes": int(n)}

    def configure_optimizers(self) -> Any:
        return None
