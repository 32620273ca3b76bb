"""The "free" training loop shape (Shafahi et al. 2019), shared by Free-AT and Fast-ARD.

Each minibatch is replayed ``m`` times. A perturbation ``delta`` of full batch shape
persists across replays, batches and epochs (zero at the start, never reset). On each
replay one backward pass gives both the parameter gradient (the optimiser steps on it)
and the input gradient (``delta`` ascends along it, then is projected onto the ball).
An epoch therefore costs about what m natural epochs cost, so configs divide the number
of epochs and the LR milestones by m.

Optionally the perturbation ascends a *separate* loss (``ascent_closure``): each replay
first takes one step of ``delta`` along the input gradient of that loss (an extra forward
and input-only backward, ``torch.autograd.grad``, so parameter gradients and DDP are not
touched), then computes the training loss at the moved point and steps the parameters.
This is the literal reading of Fast-ARD's Algorithm 2 (delta ascends the student's
cross-entropy); the default shares one backward, as free-AT does.

Under manual optimisation ``trainer.global_step`` advances m times per batch, and the LR
schedulers are stepped by the module at the end of each epoch.
Under ``precision='16-mixed'`` the input gradient arrives multiplied by the loss scale:
the sign (Linf) and normalised (L2) steps of the threat models do not care.
"""
from __future__ import annotations

from typing import Callable, Optional

import lightning.pytorch as pl
import torch
from torch import Tensor

from ..attacks import ThreatModel
from ..validation import check_int

__all__ = ["FreeReplay"]

# loss_closure(x_in) -> (loss to minimise and whose input gradient delta ascends, outputs)
LossClosure = Callable[[Tensor], tuple[Tensor, Tensor]]
# ascent_closure(x_in) -> scalar loss whose input gradient delta ascends instead
AscentClosure = Callable[[Tensor], Tensor]


class FreeReplay:
    """Persistent perturbation + m replays of a batch.

    Args:
        threat: the ball the perturbation lives in (its ``eps`` and step rule).
        replays: m, the number of replays of each minibatch (>= 1).
        step_size: the ascent step of ``delta`` per replay (free-AT uses ``eps``).
    """

    def __init__(self, threat: ThreatModel, replays: int, step_size: float) -> None:
        check_int("replays", replays, 1, "m, the replays of each batch (Shafahi et al.: 8 on CIFAR)", whole_floats=True)
        if step_size <= 0:
            raise ValueError(f"free-training step_size must be > 0, got step_size={step_size}")
        self.threat = threat
        self.replays = int(replays)
        self.step_size = float(step_size)
        self.delta: Optional[Tensor] = None

    def _delta_for(self, x: Tensor) -> Tensor:
        if self.delta is None or self.delta.shape[1:] != x.shape[1:] or self.delta.shape[0] < x.shape[0]:
            fresh = torch.zeros_like(x)
            if self.delta is not None and self.delta.shape[1:] == x.shape[1:]:
                fresh[: self.delta.shape[0]] = self.delta.to(x)
            self.delta = fresh
        self.delta = self.delta.to(device=x.device, dtype=x.dtype)
        return self.delta[: x.shape[0]]

    def run(self, module: pl.LightningModule, x: Tensor, loss_closure: LossClosure,
            ascent_closure: Optional[AscentClosure] = None) -> list[tuple[Tensor, Tensor]]:
        """Replay ``x`` m times; return ``(loss, outputs)`` of every replay (detached).

        Without ``ascent_closure`` one backward of ``loss_closure`` gives the parameter
        gradient and ``delta``'s ascent direction; ``delta`` moves after the forward.
        With it, ``delta`` first ascends ``ascent_closure`` (one step), then the training
        loss is computed at the new point.
        """
        opt = module.optimizers()
        if isinstance(opt, list):
            raise ValueError("free training expects exactly one optimiser")
        results = []
        delta = self._delta_for(x).detach()
        for _ in range(self.replays):
            delta.requires_grad_(True)
            if ascent_closure is not None:  # delta moves first, along the separate loss
                (grad,) = torch.autograd.grad(ascent_closure((x + delta).clamp(0.0, 1.0)), delta)
                delta = self._ascend(delta, grad)
            x_in = (x + delta).clamp(0.0, 1.0)
            loss, outputs = loss_closure(x_in)
            opt.zero_grad()
            module.manual_backward(loss)
            if ascent_closure is None:
                if delta.grad is None:
                    raise RuntimeError("the free-training loss does not depend on the perturbation")
                delta = self._ascend(delta, delta.grad)
            opt.step()
            results.append((loss.detach(), outputs.detach()))
        assert self.delta is not None
        self.delta[: x.shape[0]] = delta.detach()
        return results

    def _ascend(self, delta: Tensor, grad: Tensor) -> Tensor:
        with torch.no_grad():
            return self.threat.project(self.threat.step(delta.detach(), grad, self.step_size))

    # -------------------------------------------------------- checkpointing
    def state_for_checkpoint(self, module: pl.LightningModule) -> Optional[Tensor]:
        """The perturbation of every rank, stacked (world, B, ...) under DDP (a collective)."""
        if self.delta is None:
            return None
        if module._trainer is not None and module.trainer.world_size > 1:
            return module.all_gather(self.delta).detach().cpu()
        return self.delta.detach().cpu().unsqueeze(0)

    def load_from_checkpoint(self, state: Optional[Tensor], rank: int) -> None:
        if state is None:
            self.delta = None
            return
        self.delta = state[rank if rank < state.shape[0] else 0].clone()
