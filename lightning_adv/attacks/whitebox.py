"""White-box attacks of the suite (thesis tables 4.11 and 5.11; lecture 8.2.1-8.2.2).

* :class:`PGD` / :class:`FGSM` -- the foundation's :func:`~.pgd.pgd` loop
  (Linf or L2, random restarts keeping the worst restart per example);
* :class:`MIFGSM` -- momentum iterative FGSM (Dong et al. 2018): the gradient is
  L1-normalised and accumulated with decay ``mu``; the step follows the threat model's
  steepest-ascent rule (sign for Linf) and is projected onto the ball;
* :class:`DeepFool` -- Moosavi-Dezfooli et al. 2016, multi-class, Linf or L2: linearise
  the classifier, step to the nearest linearised decision boundary, repeat until the
  label flips; ``overshoot`` pushes past the boundary. Unbounded by default (as in the
  thesis: "DeepFool is not l_inf bounded"); with ``eps`` the accumulated perturbation is
  projected onto the ball;
* :class:`CarliniWagnerL2` -- Carlini and Wagner 2017 in the penalty form of the
  lecture's eq. 8.4: ``min ||delta||_2^2 + c * g(x + delta)`` with
  ``g = (max_{i != t} Z_i - Z_t + kappa)_+`` (targeted) or ``(Z_y - max_{i != y} Z_i +
  kappa)_+`` (untargeted), the box constraint by the ``tanh`` change of variables, Adam,
  and a binary search over ``c`` per example (the squared L2 norm, as in Carlini and
  Wagner's L2 attack; the lecture writes ``||delta||_p``). With ``eps`` only adversarial points with
  ``||delta||_2 <= eps`` are kept, so robust accuracy is accuracy at radius ``eps``.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .base import Attack, AttackOutput, Model
from ..validation import check_int, check_real, check_step_size
from .losses import LossFn, get_attack_loss
from .pgd import input_gradient, pgd
from .threat import ThreatModel, clamp_to_image, make_threat

__all__ = ["PGD", "FGSM", "MIFGSM", "DeepFool", "CarliniWagnerL2", "choose_targets", "TARGET_MODES"]


class PGD(Attack):
    """PGD-k (Madry et al.) in Linf or L2 with random restarts: the training attack and the
    evaluation attack are this one class.

    Defaults are the thesis' training attack: Linf, eps 8/255, 10 steps, random start
    (``step_size=None`` means ``2.5 * eps / steps``, Madry et al.'s rule: 2/255 here). The
    thesis' evaluation settings are ``steps=20, step_size=2/255`` and the strong ones of table
    4.11 ``steps=20, restarts=100`` and ``steps=1000``.

    Args:
        loss: the per-example loss maximised: 'ce' (labels), 'kl' (the target is a probability
            vector: TRADES) or 'margin' (Carlini-Wagner). A training objective may pass its own
            ``loss_fn`` to :meth:`run` instead.
        restarts: a restart that fools the model wins per example (see :func:`~.pgd.pgd`).
        targeted: descend towards target labels: ``run(..., targets=t)``, or ``y`` itself
            holds the target labels when ``targets`` is not given.
        eot_samples: average each gradient over this many forwards (EOT, randomised models).
        bn_mode: the model's mode during the attack: 'eval' (evaluation), 'train' (the
            authors' training attacks: BatchNorm batch statistics) or 'keep'.
        start_sigma: with ``random_start=false``, start at ``x + start_sigma * N(0, 1)``
            (official TRADES: 0.001); 0 starts at ``x``.
    """

    supports_loss_fn = True
    eps: float  # never None (checked in __init__)

    def __init__(self, eps: float = 8 / 255, steps: int = 10, step_size: Optional[float] = None,
                 norm: str = "linf", random_start: bool = True, restarts: int = 1, targeted: bool = False,
                 loss: str = "ce", eot_samples: int = 1, name: Optional[str] = None, bn_mode: str = "eval",
                 start_sigma: float = 0.0) -> None:
        if eps is None:  # the base class takes None for unbounded attacks; PGD projects onto its ball
            raise ValueError("PGD.eps must be a number >= 0 (the radius in [0, 1] pixel units), got eps=None; e.g. eps 0.031")
        super().__init__(norm=norm, eps=eps, name=name, bn_mode=bn_mode)
        self.steps = check_int("steps", steps, 1, whole_floats=True)
        self.restarts = check_int("restarts", restarts, 1, whole_floats=True)
        self.eot_samples = check_int("eot_samples", eot_samples, 1, whole_floats=True)
        if step_size is not None:
            step_size = check_step_size(step_size, self.eps, self.steps)
        self.step_size = step_size
        self.random_start = bool(random_start)
        self.start_sigma = check_real("start_sigma", start_sigma, minimum=0.0)
        if self.start_sigma and self.random_start:
            raise ValueError(f"start_sigma={start_sigma:g} is a Gaussian start; it needs random_start=false "
                             f"(random_start draws uniformly in the ball)")
        self.targeted = bool(targeted)
        get_attack_loss(loss)
        self.loss = loss

    @property
    def threat(self) -> ThreatModel:
        return make_threat(self.norm, float(self.eps or 0.0))

    @property
    def effective_step_size(self) -> float:
        return float(self.step_size) if self.step_size is not None else 2.5 * float(self.eps) / self.steps

    @property
    def budget(self) -> int:
        """Gradient steps in total (steps x restarts x EOT samples): more must never mean weaker."""
        return self.steps * self.restarts * self.eot_samples

    def default_label(self) -> str:
        kind = f"pgd{self.steps}" if (self.random_start or self.steps != 1) else "fgsm"
        restarts = f"_r{self.restarts}" if self.restarts > 1 else ""
        loss = "" if self.loss == "ce" else f"_{self.loss}"
        eot = f"_eot{self.eot_samples}" if self.eot_samples > 1 else ""
        tgt = "_targeted" if self.targeted else ""
        return f"{kind}_{self.norm}{self._eps_tag()}{restarts}{loss}{eot}{tgt}"

    def _perturb(self, model: Model, x: Tensor, y: Tensor, targets: Optional[Tensor] = None,
                 loss_fn: Optional[LossFn] = None) -> AttackOutput:
        target = targets if (self.targeted and targets is not None) else y
        x_adv = pgd(model, x, target, self.threat, steps=self.steps, step_size=self.effective_step_size,
                    loss_fn=loss_fn or get_attack_loss(self.loss), random_start=self.random_start,
                    restarts=self.restarts, targeted=self.targeted, bn_mode="keep", eot_samples=self.eot_samples,
                    start_sigma=self.start_sigma)
        assert isinstance(x_adv, Tensor)
        return AttackOutput(x_adv)


class FGSM(PGD):
    """Fast gradient sign method (Goodfellow et al.): one step of size eps, no random start."""

    def __init__(self, eps: float = 8 / 255, norm: str = "linf", loss: str = "ce", eot_samples: int = 1,
                 name: Optional[str] = None, bn_mode: str = "eval") -> None:
        super().__init__(eps=eps, steps=1, step_size=None, norm=norm, restarts=1, random_start=False, loss=loss,
                         eot_samples=eot_samples, name=name, bn_mode=bn_mode)

    @property
    def effective_step_size(self) -> float:
        return float(self.eps or 0.0)


class MIFGSM(Attack):
    """Momentum iterative FGSM (Dong et al. 2018), thesis' MI-FGSM_20.

    ``g <- decay * g + grad / ||grad||_1``; ``x <- Proj(x + alpha * step(g))`` with
    ``alpha = eps / steps`` by default, starting at the clean point.
    """

    supports_loss_fn = True

    def __init__(self, eps: float = 8 / 255, steps: int = 20, decay: float = 1.0, step_size: Optional[float] = None,
                 norm: str = "linf", eot_samples: int = 1, name: Optional[str] = None, bn_mode: str = "eval") -> None:
        super().__init__(norm=norm, eps=eps, name=name, bn_mode=bn_mode)
        self.steps = check_int("steps", steps, 1, whole_floats=True)
        self.decay = check_real("decay", decay, minimum=0.0)
        self.eot_samples = check_int("eot_samples", eot_samples, 1, whole_floats=True)
        if step_size is not None:
            check_step_size(step_size, self.eps, self.steps)
        self.step_size = step_size

    def default_label(self) -> str:
        eot = f"_eot{self.eot_samples}" if self.eot_samples > 1 else ""
        return f"mifgsm{self.steps}_{self.norm}{self._eps_tag()}{eot}"

    def _perturb(self, model: Model, x: Tensor, y: Tensor, targets: Optional[Tensor] = None,
                 loss_fn: Optional[LossFn] = None) -> AttackOutput:
        assert self.eps is not None
        threat = make_threat(self.norm, self.eps)
        alpha = float(self.step_size) if self.step_size is not None else self.eps / self.steps
        delta = torch.zeros_like(x)
        momentum = torch.zeros_like(x)
        shape = (-1, *([1] * (x.dim() - 1)))
        loss_fn = loss_fn or get_attack_loss("ce")
        for _ in range(self.steps if self.eps > 0 else 0):
            grad = input_gradient(model, x + delta, y, loss_fn, eot_samples=self.eot_samples)
            momentum = self.decay * momentum + grad / grad.abs().flatten(1).sum(1).clamp_min(1e-12).view(shape)
            delta = clamp_to_image(x, threat.project(threat.step(delta, momentum, alpha)))
        return AttackOutput(x + delta)


class DeepFool(Attack):
    """DeepFool (Moosavi-Dezfooli et al. 2016), multi-class, in Linf or L2.

    Args:
        steps: maximum iterations (the thesis' table 5.11 uses 2).
        overshoot: the final perturbation is ``(1 + overshoot) * r``.
        candidates: number of classes (highest clean logits, true class excluded)
            considered as the nearest boundary; ``None`` means all.
        eps: optional bound; ``None`` (default) is the unbounded original.
    """

    def __init__(self, norm: str = "linf", steps: int = 50, overshoot: float = 0.02, candidates: Optional[int] = 10,
                 eps: Optional[float] = None, name: Optional[str] = None, bn_mode: str = "eval") -> None:
        super().__init__(norm=norm, eps=eps, name=name, bn_mode=bn_mode)
        self.steps = check_int("steps", steps, 1, whole_floats=True)
        self.overshoot = check_real("overshoot", overshoot, minimum=0.0)
        if candidates is not None:
            check_int("candidates", candidates, 1, whole_floats=True)
        self.candidates = candidates

    def default_label(self) -> str:
        return f"deepfool{self.steps}_{self.norm}{self._eps_tag()}"

    def _perturb(self, model: Model, x: Tensor, y: Tensor, targets: Optional[Tensor] = None) -> AttackOutput:
        shape = (-1, *([1] * (x.dim() - 1)))
        with torch.no_grad():
            logits0 = model(x).float()
        num_classes = logits0.shape[1]
        k = num_classes - 1 if self.candidates is None else min(self.candidates, num_classes - 1)
        masked = logits0.clone()
        masked.scatter_(1, y.view(-1, 1), float("-inf"))
        cand = masked.topk(k, dim=1).indices  # (B, k), never the true class
        r_tot = torch.zeros_like(x)
        active = logits0.argmax(1) == y
        threat = make_threat(self.norm, self.eps) if self.eps is not None else None
        x_adv = x.clone()
        for _ in range(self.steps):
            if not active.any():
                break
            xi = x_adv.clone().requires_grad_(True)
            logits = model(xi).float()
            z_y = logits.gather(1, y.view(-1, 1)).squeeze(1)
            grad_y = torch.autograd.grad(z_y.sum(), xi, retain_graph=True)[0]
            best_dist = torch.full_like(z_y, float("inf"))
            best_r = torch.zeros_like(x)
            for j in range(k):
                z_k = logits.gather(1, cand[:, j:j + 1]).squeeze(1)
                grad_k = torch.autograd.grad(z_k.sum(), xi, retain_graph=j < k - 1)[0]
                w = grad_k - grad_y
                f = (z_k - z_y).detach()
                if self.norm == "linf":
                    wn = w.flatten(1).abs().sum(1)  # dual norm of Linf is L1
                    step_dir = w.sign()
                else:
                    wn = w.flatten(1).norm(dim=1)
                    step_dir = w / wn.clamp_min(1e-12).view(shape)
                dist = (f.abs() + 1e-4) / wn.clamp_min(1e-12)
                better = dist < best_dist
                best_dist = torch.where(better, dist, best_dist)
                best_r = torch.where(better.view(shape), dist.view(shape) * step_dir, best_r)
            r_tot = r_tot + best_r * active.view(shape).to(x.dtype)
            r = (1 + self.overshoot) * r_tot
            if threat is not None:
                r = threat.project(r)
            x_adv = (x + clamp_to_image(x, r)).detach()
            with torch.no_grad():
                active = active & (model(x_adv).argmax(1) == y)
        return AttackOutput(x_adv)


TARGET_MODES = ("random", "least_likely", "next")


def choose_targets(logits: Tensor, y: Tensor, mode: str, generator: Optional[torch.Generator] = None) -> Tensor:
    """Target labels != y: 'random' (uniform over the others), 'least_likely', or 'next' ((y+1) mod C)."""
    num_classes = logits.shape[1]
    if mode == "next":
        return (y + 1) % num_classes
    if mode == "least_likely":
        masked = logits.float().clone()
        masked.scatter_(1, y.view(-1, 1), float("inf"))
        return masked.argmin(1)
    if mode == "random":
        shift = torch.randint(1, num_classes, y.shape, generator=generator, device="cpu").to(y.device)
        return (y + shift) % num_classes
    raise ValueError(f"target_mode must be one of {TARGET_MODES}, got target_mode={mode!r}")


class CarliniWagnerL2(Attack):
    """Carlini-Wagner L2 in the penalty form of eq. 8.4, untargeted or targeted.

    Args:
        c: initial penalty constant; a binary search (``search_steps``) adapts it per example.
        steps: Adam steps per value of ``c``; ``lr`` the Adam learning rate on ``w``.
        kappa: confidence margin in ``g``.
        targeted: aim at a target class chosen by ``target_mode`` ('random' seeded by
            ``seed``, 'least_likely', 'next'), or given as ``run(..., targets=...)``.
        eps: if set, keep only adversarial points with ``||delta||_2 <= eps``.
    """

    def __init__(self, c: float = 1.0, steps: int = 100, search_steps: int = 5, lr: float = 0.01, kappa: float = 0.0,
                 targeted: bool = False, target_mode: str = "random", eps: Optional[float] = None, seed: int = 0,
                 name: Optional[str] = None, bn_mode: str = "eval") -> None:
        super().__init__(norm="l2", eps=eps, name=name, bn_mode=bn_mode)
        self.c = check_real("c", c, positive=True)
        self.steps = check_int("steps", steps, 1, whole_floats=True)
        self.search_steps = check_int("search_steps", search_steps, 1, whole_floats=True)
        self.lr = check_real("lr", lr, positive=True)
        self.kappa = check_real("kappa", kappa, minimum=0.0)
        if target_mode not in TARGET_MODES:
            raise ValueError(f"target_mode must be one of {TARGET_MODES}, got target_mode={target_mode!r}")
        self.targeted = bool(targeted)
        self.target_mode = target_mode
        self.seed = int(seed)

    def default_label(self) -> str:
        tgt = "_targeted" if self.targeted else ""
        return f"cw_l2{self._eps_tag()}{tgt}"

    def _perturb(self, model: Model, x: Tensor, y: Tensor, targets: Optional[Tensor] = None) -> AttackOutput:
        if self.targeted and targets is None:
            with torch.no_grad():
                logits = model(x)
            targets = choose_targets(logits, y, self.target_mode, torch.Generator().manual_seed(self.seed))
        return AttackOutput(self._optimise(model, x, y, targets if self.targeted else None))

    def _g(self, logits: Tensor, y: Tensor, targets: Optional[Tensor]) -> Tensor:
        cls = targets if targets is not None else y
        z_c = logits.gather(1, cls.view(-1, 1)).squeeze(1)
        other = logits.clone()
        other.scatter_(1, cls.view(-1, 1), float("-inf"))
        z_o = other.max(1).values
        if targets is not None:
            return (z_o - z_c + self.kappa).clamp_min(0)
        return (z_c - z_o + self.kappa).clamp_min(0)

    def _optimise(self, model: Model, x: Tensor, y: Tensor, targets: Optional[Tensor]) -> Tensor:
        b = x.shape[0]
        w0 = torch.atanh((x * 2 - 1).clamp(-1 + 1e-6, 1 - 1e-6))
        const = torch.full((b,), self.c, device=x.device)
        lower = torch.zeros(b, device=x.device)
        upper = torch.full((b,), 1e10, device=x.device)
        best_l2 = torch.full((b,), float("inf"), device=x.device)
        best_adv = x.clone()
        shape = (-1, *([1] * (x.dim() - 1)))
        limit = float("inf") if self.eps is None else self.eps
        for _ in range(self.search_steps):
            w = w0.clone().requires_grad_(True)
            opt = torch.optim.Adam([w], lr=self.lr)
            found = torch.zeros(b, dtype=torch.bool, device=x.device)
            for _ in range(self.steps):
                xa = (torch.tanh(w) + 1) / 2
                logits = model(xa).float()
                l2sq = (xa - x).flatten(1).pow(2).sum(1)
                loss = (l2sq + const * self._g(logits, y, targets)).sum()
                (w.grad,) = torch.autograd.grad(loss, w)
                opt.step()
                with torch.no_grad():
                    pred = logits.argmax(1)
                    success = pred == targets if targets is not None else pred != y
                    l2 = l2sq.detach().sqrt()
                    improve = success & (l2 < best_l2) & (l2 <= limit)
                    best_l2 = torch.where(improve, l2, best_l2)
                    best_adv = torch.where(improve.view(shape), xa.detach(), best_adv)
                    found |= success
            upper = torch.where(found, torch.minimum(upper, const), upper)
            lower = torch.where(found, lower, torch.maximum(lower, const))
            const = torch.where(upper < 1e9, (lower + upper) / 2, const * 10)
        return best_adv
