"""Certified accuracy as a row of the attack suite: :class:`Certify`.

    AttackSuite([PGD(eps=0.1, steps=20), Certify(method="crown", eps=0.1)])

puts, next to the attack rows of the same report, the fraction of examples whose prediction
is *proven* constant in the ball (every margin lower bound ``> 0``): per example one of
certified / attacked-but-robust / broken / clean-wrong. The suite checks per example that no
certified example was broken inside the ball (flag ``certified_but_broken``).
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import torch
from torch import Tensor, nn

from ..attacks.base import Attack, AttackOutput
from ..attacks.context import module_mode
from .crown import crown_margin
from .ibp import ibp_margin
from .network import BoundNetwork
from ..validation import check_int, check_real

__all__ = ["Certify", "CERTIFY_METHODS", "margin_lower_bound", "certified"]

CERTIFY_METHODS = ("ibp", "crown", "crown-ibp")


#: dtypes the bounds are never computed in: a rounded logit can turn a negative margin into a "certified" one
_HALF = (torch.float16, torch.bfloat16)


def margin_lower_bound(net: BoundNetwork, x: Tensor, y: Tensor, eps: float, method: str = "crown",
                       norm: str = "linf") -> Tensor:
    """(B, K) lower bounds of ``z_y - z_j`` by ``method`` ('ibp', 'crown', 'crown-ibp').

    Always computed in fp32 (or the input's fp64), with autocast off, whatever the caller's precision: under
    bf16 autocast the bounds would round by about 2^-8 of the logits and certify points whose fp32 margin is
    negative. Weights stored in half precision (``bf16-true``, ``16-true``) are refused.
    """
    if method not in CERTIFY_METHODS:
        raise ValueError(f"certify: method={method!r} is not one of {CERTIFY_METHODS}")
    half = sorted({str(p.dtype) for p in net.model.parameters() if p.dtype in _HALF})
    if half:
        raise ValueError(f"certify: the model's weights are {', '.join(half)}; certified bounds are computed in fp32 "
                         "from fp32 weights: train with precision 32-true or bf16-mixed / 16-mixed, not *-true halves")
    with torch.autocast(x.device.type, enabled=False):
        x = x.float() if x.dtype in _HALF else x
        if method == "ibp":
            return ibp_margin(net, x, y, eps, norm)
        return crown_margin(net, x, y, eps, norm, intermediate="crown" if method == "crown" else "ibp")


def certified(margin_lb: Tensor, y: Tensor) -> Tensor:
    """(B,) True where every margin ``z_y - z_j`` (j != y) has a lower bound > 0."""
    others = torch.ones_like(margin_lb, dtype=torch.bool).scatter(1, y[:, None], False)
    return torch.where(others, margin_lb, torch.full_like(margin_lb, float("inf"))).min(1).values > 0


class Certify(Attack):
    """A certified row of the suite (``kind = 'certified'``): certified accuracy by bound propagation.

    Args:
        method: 'ibp', 'crown' (full CROWN: the tightest, cost grows with the neurons) or
            'crown-ibp' (CROWN with IBP's intermediate bounds).
        norm: 'linf' (all methods) or 'l2' ('crown' only).
        eps: radius of the ball in [0, 1] pixel units (>= 0).
        name: label of the row (default ``certified_<method>_<norm>_eps<...>``).
        batch_size: examples bounded at once (full CROWN's memory grows with it).
        bn_mode: must stay 'eval' (bounds use BatchNorm's running statistics).
    """

    kind = "certified"

    eps: float  # never None (checked in __init__)

    def __init__(self, method: str = "crown", norm: str = "linf", eps: float = 0.1, name: Optional[str] = None,
                 batch_size: int = 64, bn_mode: str = "eval") -> None:
        check_real("Certify.eps", eps, minimum=0.0, hint="the radius in [0, 1] pixel units")
        super().__init__(norm=norm, eps=eps, name=name, bn_mode=bn_mode)
        if method not in CERTIFY_METHODS:
            raise ValueError(f"Certify.method={method!r} is not one of {CERTIFY_METHODS}")
        if method != "crown" and self.norm != "linf":
            raise ValueError(f"Certify(method={method!r}) bounds the Linf ball only (IBP boxes), got norm={norm!r}; "
                             "use method='crown' for L2")
        if bn_mode != "eval":
            raise ValueError(f"Certify.bn_mode must be 'eval' (bounds use running statistics), got bn_mode={bn_mode!r}")
        check_int("Certify.batch_size", batch_size, 1)
        self.method = method
        self.batch_size = batch_size
        self._net: Optional[tuple[Any, BoundNetwork]] = None

    def default_label(self) -> str:
        return f"certified_{self.method.replace('-', '')}_{self.norm}{self._eps_tag()}"

    def network(self, model: Callable[[Tensor], Tensor]) -> BoundNetwork:
        """The :class:`BoundNetwork` of ``model`` (built once per model object)."""
        if self._net is None or self._net[0] is not model:
            if not isinstance(model, nn.Module):
                raise ValueError(f"Certify needs an nn.Module made of supported layers, got {type(model).__name__}")
            self._net = (model, BoundNetwork(model))
        return self._net[1]

    def margins(self, model: Callable[[Tensor], Tensor], x: Tensor, y: Tensor,
                mode_module: Optional[nn.Module] = None) -> Tensor:
        """(B, K) certified lower bounds of the margins, in eval mode, in batches of ``batch_size``."""
        net = self.network(model)
        if mode_module is None and isinstance(model, nn.Module):
            mode_module = model
        self.check_inputs(x)
        with torch.inference_mode(False), torch.no_grad(), module_mode(mode_module, "eval"):
            x, y = x.clone(), y.clone()
            parts = [margin_lower_bound(net, x[i:i + self.batch_size], y[i:i + self.batch_size], self.eps,
                                        self.method, self.norm) for i in range(0, x.shape[0], self.batch_size)]
        return torch.cat(parts) if parts else x.new_zeros(0, 0)

    def certify(self, model: Callable[[Tensor], Tensor], x: Tensor, y: Tensor,
                mode_module: Optional[nn.Module] = None) -> Tensor:
        """(B,) True where the prediction is proven to be ``y`` on the whole ball."""
        if x.shape[0] == 0:
            return torch.zeros(0, dtype=torch.bool, device=x.device)
        return certified(self.margins(model, x, y, mode_module), y)

    def _perturb(self, model: Any, x: Tensor, y: Tensor, targets: Optional[Tensor]) -> AttackOutput:
        raise ValueError(f"{self.label} is a certificate, not an attack: put it in an AttackSuite (which calls "
                         "certify()) or call certify() directly")
