"""AutoAttack (Croce and Hein 2020), standard version, through the authors' code.

The attacks come from ``pyautoattack`` 0.2.0 (PyPI; the code of fra31/auto-attack,
MIT, no dependencies beyond torch and numpy; pinned in pyproject.toml).
:class:`AutoAttack` builds the authors' ``AutoAttack(version='standard')`` object with
``eps`` and ``norm`` always passed explicitly, and runs its four configured components
on each batch as the authors' ``run_standard_evaluation`` does: APGD-CE (100 steps, 1
restart), APGD-T (DLR, 9 target classes), FAB-T (9 target classes), Square (5000
queries), each only on the points still robust after the previous ones.

``version='rand'`` is the authors' version for randomised defenses (Croce and Hein 2020,
"rand"): APGD-CE and APGD-DLR, each with Expectation over Transformation over 20 forwards
per gradient (``eot_iter=20``), one restart.

Differences, both documented in the report's row: the cascade is per batch (the suite
streams test batches); with fewer than 10 classes (few-shot tasks) the number of target
classes is ``num_classes - 1`` (the authors' checks warn that 9 targets need 10 classes).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .base import Attack, AttackOutput, Model
from ..validation import check_int

__all__ = ["AutoAttack", "AUTOATTACK_COMPONENTS", "AUTOATTACK_VERSIONS"]

AUTOATTACK_COMPONENTS = ("apgd-ce", "apgd-t", "fab-t", "square")
#: the components of each version, as the authors' ``set_version`` defines them
AUTOATTACK_VERSIONS = {"standard": AUTOATTACK_COMPONENTS, "rand": ("apgd-ce", "apgd-dlr")}


class AutoAttack(Attack):
    """AutoAttack at radius ``eps``: standard (APGD-CE, APGD-T, FAB-T, Square) or rand
    (APGD-CE, APGD-DLR with EOT over 20 samples, for randomised models).

    Args:
        eps: radius in [0, 1] pixel units (no default on purpose: AutoAttack's own default
            is 0.3, MNIST's; pass the radius of your threat model).
        norm: 'linf' or 'l2'.
        version: 'standard' or 'rand'.
        components: a subset of the version's components (standard: 'apgd-ce', 'apgd-t',
            'fab-t', 'square'; rand: 'apgd-ce', 'apgd-dlr'), run in this order (default: all).
        seed: the authors' attacks reseed the generator with it (the suite forks the
            generator around the call).
        square_queries: Square's query budget; 5000 is the standard version, anything
            else appears in the label (``_sq500``) as a non-standard run (quick checks).
    """

    kind = "ensemble"

    def __init__(self, eps: float, norm: str = "linf", version: str = "standard",
                 components: Optional[list[str]] = None, seed: int = 0, square_queries: int = 5000,
                 name: Optional[str] = None, bn_mode: str = "eval") -> None:
        super().__init__(norm=norm, eps=eps, name=name, bn_mode=bn_mode)
        if version not in AUTOATTACK_VERSIONS:
            raise ValueError(f"version={version!r} is not one of {sorted(AUTOATTACK_VERSIONS)} ('rand' for "
                             f"randomised defenses)")
        self.version = version
        allowed = AUTOATTACK_VERSIONS[version]
        components = list(components) if components is not None else list(allowed)
        bad = [c for c in components if c not in allowed]
        if bad or not components:
            raise ValueError(f"components={components} must be a non-empty subset of {allowed} (version={version!r})")
        self.components = components
        self.seed = int(seed)
        self.square_queries = check_int("square_queries", square_queries, 1, "standard: 5000", whole_floats=True)

    def default_label(self) -> str:
        tag = "" if self.components == list(AUTOATTACK_VERSIONS[self.version]) else "_" + "+".join(self.components)
        sq = "" if self.square_queries == 5000 or "square" not in self.components else f"_sq{self.square_queries}"
        version = "" if self.version == "standard" else f"_{self.version}"
        return f"autoattack{version}_{self.norm}{self._eps_tag()}{tag}{sq}"

    def _perturb(self, model: Model, x: Tensor, y: Tensor, targets: Optional[Tensor] = None) -> AttackOutput:
        from pyautoattack import AutoAttack as AuthorsAutoAttack

        assert self.eps is not None
        adv = x.clone()
        if self.eps == 0:
            return AttackOutput(adv)
        with torch.no_grad():
            num_classes = model(x[:1]).shape[1]
        aa = AuthorsAutoAttack(model, eps=self.eps, norm={"linf": "Linf", "l2": "L2"}[self.norm],
                               version=self.version, seed=self.seed, device=x.device)
        aa.apgd_targeted.n_target_classes = min(aa.apgd_targeted.n_target_classes, num_classes - 1)
        aa.fab.n_target_classes = min(aa.fab.n_target_classes, num_classes - 1)
        aa.square.n_queries = self.square_queries
        with torch.no_grad():
            robust = model(x).argmax(1) == y
        for comp in self.components:
            idx = robust.nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            xs, ys = x[idx].clone(), y[idx].clone()
            if comp in ("apgd-ce", "apgd-dlr"):  # 'rand' sets aa.apgd.eot_iter = 20
                aa.apgd.loss = comp.split("-")[1]
                aa.apgd.seed = self.seed
                out = aa.apgd.perturb(xs, ys)
            elif comp == "apgd-t":
                aa.apgd_targeted.seed = self.seed
                out = aa.apgd_targeted.perturb(xs, ys)
            elif comp == "fab-t":
                aa.fab.targeted = True
                aa.fab.n_restarts = 1
                aa.fab.seed = self.seed
                out = aa.fab.perturb(xs, ys)
            else:
                aa.square.seed = self.seed
                out = aa.square.perturb(xs, ys)
            with torch.no_grad():
                fooled = model(out).argmax(1) != ys
            adv[idx[fooled]] = out[fooled].to(adv.dtype)
            robust[idx[fooled]] = False
        return AttackOutput(adv)
