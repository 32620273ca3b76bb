"""Small helpers shared by the analysis functions."""
from __future__ import annotations

from torch import Tensor, nn

__all__ = ["trainable_parameters"]


def trainable_parameters(model: nn.Module) -> dict[str, Tensor]:
    """The named parameters with ``requires_grad``, in registration order."""
    return {k: v for k, v in model.named_parameters() if v.requires_grad}
