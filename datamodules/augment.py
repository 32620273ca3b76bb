"""Training augmentation choices of the image datamodules, and batch mixing (CutMix / MixUp).

Two independent knobs, both applied to the *training* split only (validation and test data
go through the evaluation transform and the default collate, never augmented):

* ``augment``: per-image geometric augmentation, one of :data:`AUGMENTS`:
  ``"none"``, ``"flips"`` (``RandomHorizontalFlip``), ``"crops"`` (``RandomCrop`` of the
  image size after zero padding by the data set's ``crop_padding``: a random translation
  whose uncovered border is black) or ``"flips+crops"`` (crop, then flip: the order the
  CIFAR pipeline always had, so seeded runs draw the same random numbers). ``True`` means
  the data set's historical default (CIFAR: ``flips+crops``, digits: ``crops``, MNIST and
  Fashion-MNIST: ``none``) and ``False`` means ``none``, so existing configs are unchanged.
* ``mix``: batch mixing, one of :data:`MIXES`, done in the training loader's collate
  function by torchvision's ``transforms.v2.CutMix`` / ``MixUp`` (``cutmix_or_mixup``: one
  of the two per batch, with equal probability) with ``Beta(mix_alpha, mix_alpha)`` mixing
  weights. Labels become soft: ``float32`` of shape ``(B, num_classes)`` summing to 1. Only
  modules that declare they can train on soft labels accept it
  (:func:`check_soft_labels`, called by the datamodule's ``setup('fit')``).
"""
from __future__ import annotations

from typing import Any, Literal, Optional, Union

import torch
from torch.utils.data import default_collate
from torchvision import transforms
from torchvision.transforms import v2

from lightning_adv.validation import check_real

__all__ = ["AUGMENTS", "MIXES", "AugmentName", "MixCollate", "MixName", "augment_transforms", "check_mix",
           "check_soft_labels", "resolve_augment"]

AugmentName = Literal["none", "flips", "crops", "flips+crops"]
MixName = Literal["none", "cutmix", "mixup", "cutmix_or_mixup"]
AUGMENTS: tuple[str, ...] = ("none", "flips", "crops", "flips+crops")
MIXES: tuple[str, ...] = ("none", "cutmix", "mixup", "cutmix_or_mixup")


def resolve_augment(augment: Any, default: str) -> str:
    """``augment`` as one of :data:`AUGMENTS` (``True``: the data set's ``default``, ``False``: none)."""
    if isinstance(augment, bool):
        return default if augment else "none"
    if augment not in AUGMENTS:
        raise ValueError(f"augment={augment!r} is invalid: use one of {list(AUGMENTS)} (or true for the data set's "
                         f"default, {default!r}; false for none)")
    return str(augment)


def check_mix(mix: Any, mix_alpha: Any) -> None:
    """Refuse an unknown ``mix`` or a ``mix_alpha`` that is not a finite number > 0."""
    if mix not in MIXES:
        raise ValueError(f"mix={mix!r} is invalid: use one of {list(MIXES)}")
    check_real("mix_alpha", mix_alpha, positive=True, hint="the Beta(alpha, alpha) parameter of CutMix/MixUp; "
               "1.0 is the usual choice")


def augment_transforms(augment: str, size: int, padding: int) -> list[Any]:
    """The per-image transforms of ``augment`` for square images of side ``size`` (PIL or tensor).

    Crops pad with zeros (``fill=0``) by ``padding`` pixels on each side and cut a ``size`` square
    back out; the crop comes before the flip (the CIFAR pipeline's historical order)."""
    out: list[Any] = []
    if augment in ("crops", "flips+crops"):
        out.append(transforms.RandomCrop(size, padding=padding, fill=0))
    if augment in ("flips", "flips+crops"):
        out.append(transforms.RandomHorizontalFlip())
    return out


class MixCollate:
    """Collate a training batch, then mix it: ``(x, y) -> (x_mixed, y_soft)``.

    ``y_soft`` is ``float32`` ``(B, num_classes)``: for MixUp ``lam * onehot(y) + (1 - lam) *
    onehot(y[perm])`` with ``x_mixed = lam * x + (1 - lam) * x[perm]``; for CutMix a box of
    ``x[perm]`` is pasted into ``x`` and ``lam`` is the area left of ``x`` (torchvision's
    ``transforms.v2``; the batch is mixed with a rolled copy of itself). A picklable object, so
    it works in dataloader workers.
    """

    def __init__(self, mix: MixName, mix_alpha: float, num_classes: int) -> None:
        check_mix(mix, mix_alpha)
        if mix == "none":
            raise ValueError("MixCollate needs mix != 'none' (the default collate does no mixing)")
        self.mix, self.mix_alpha, self.num_classes = mix, float(mix_alpha), int(num_classes)
        cutmix = v2.CutMix(alpha=self.mix_alpha, num_classes=self.num_classes)
        mixup = v2.MixUp(alpha=self.mix_alpha, num_classes=self.num_classes)
        self._mixer = {"cutmix": cutmix, "mixup": mixup,
                       "cutmix_or_mixup": v2.RandomChoice([cutmix, mixup])}[mix]

    def __call__(self, batch: list[Any]) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = default_collate(batch)
        x, y = self._mixer(x, y)
        return x, y.float()

    def __repr__(self) -> str:
        return f"MixCollate(mix={self.mix!r}, mix_alpha={self.mix_alpha}, num_classes={self.num_classes})"


def check_soft_labels(trainer: Optional[Any], mix: str) -> None:
    """Refuse batch mixing (soft labels) for a module that does not declare it can train on them.

    A module accepts soft labels when it has ``soft_label_refusal()`` returning ``None``
    (:class:`~lightning_adv.modules.Classifier` for natural training, ``AdvTraining`` with the
    ``PGDAT`` or ``TRADES`` objective); otherwise this raises, naming the module and the fix."""
    module = getattr(trainer, "lightning_module", None) if trainer is not None else None
    if mix == "none" or module is None:
        return
    refusal = getattr(module, "soft_label_refusal", None)
    reason: Union[str, None] = (refusal() if callable(refusal)
                                else f"{type(module).__name__} does not train on soft labels; use --data.mix none, or "
                                     f"natural training (Classifier) / AdvTraining with PGDAT or TRADES "
                                     f"(docs/training-options.md)")
    if reason is not None:  # the reason names the fix (the objective's or the module's)
        raise ValueError(f"data.mix={mix!r} gives soft labels but {reason}")
