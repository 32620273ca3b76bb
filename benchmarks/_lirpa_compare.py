"""bench_certify.py's comparison with auto_LiRPA: the same bounds on the same conv nets, timed in one run.

The nets are the "small" and "medium" CNNs of Gowal et al. 2018 (CROWN-IBP's DM-small / DM-medium) on
1x28x28 inputs, random weights (nearly every ReLU unstable: the worst case for full CROWN). For each
method (IBP, CROWN-IBP, full CROWN; Linf, and L2 for full CROWN, ours bounds L2 only by CROWN) the best
of ``repeats`` timings (CPU time of the process, ``time.process_time``: on a shared machine it moves less
than wall time; on a GPU use ``--device cuda``, where it is not meaningful, only as a rough guide) of ours
and of auto_LiRPA's ``compute_bounds`` on the margin specification
``C = e_y - e_j``, alternated, and the largest ``theirs - ours`` over the margins (> 0: ours looser) next to
the largest bound's magnitude (float rounding is relative to it).
"""
from __future__ import annotations

import time
from typing import Optional

import torch
from torch import nn

from lightning_adv.certify import BoundNetwork, margin_lower_bound, margin_spec

LIRPA_METHODS = {"ibp": "IBP", "crown-ibp": "CROWN-IBP", "crown": "backward"}


def gowal_small() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 16, 4, 2), nn.ReLU(), nn.Conv2d(16, 32, 4, 1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(32 * 10 * 10, 100), nn.ReLU(), nn.Linear(100, 10))


def gowal_medium() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 32, 3, 1), nn.ReLU(), nn.Conv2d(32, 32, 4, 2), nn.ReLU(),
                         nn.Conv2d(32, 64, 3, 1), nn.ReLU(), nn.Conv2d(64, 64, 4, 2), nn.ReLU(), nn.Flatten(),
                         nn.Linear(64 * 4 * 4, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))


def lirpa_status() -> tuple[Optional[object], str]:
    """auto_LiRPA's module, or None and why not."""
    try:
        import auto_LiRPA
    except Exception as e:  # noqa: BLE001 - any import failure means "not comparable here"
        return None, f"auto_LiRPA is not importable ({type(e).__name__}: {e})"
    return auto_LiRPA, f"auto_LiRPA {auto_LiRPA.__version__} from {auto_LiRPA.__file__}"


def _best(fn, repeats: int) -> tuple[float, torch.Tensor]:
    out, best = None, float("inf")
    for _ in range(repeats):
        t0 = time.process_time()  # CPU seconds of this process: steadier than wall time on a shared machine
        out = fn()
        best = min(best, time.process_time() - t0)
    return best, out


def compare(lirpa, n: int, eps_linf: float, eps_l2: float, repeats: int, device: str,
            nets: tuple[str, ...] = ("small", "medium")) -> list[dict]:
    """Rows (net, method, norm, ours_s, lirpa_s, ratio, looser) printed as they come."""
    from auto_LiRPA import BoundedModule, BoundedTensor, PerturbationLpNorm
    rows = []
    for name in nets:
        torch.manual_seed(0)
        model = (gowal_small if name == "small" else gowal_medium)().to(device).eval()
        x = torch.rand(n, 1, 28, 28, device=device) * 0.5 + 0.25
        with torch.no_grad():
            y = model(x).argmax(1)
        spec = margin_spec(y, 10, x.dtype)
        mask = spec.abs().sum(-1) > 0
        net, bounded = BoundNetwork(model), BoundedModule(model, torch.zeros_like(x[:1]), device=device)
        for method, norm in (("ibp", "linf"), ("crown-ibp", "linf"), ("crown", "linf"), ("crown", "l2")):
            eps = eps_linf if norm == "linf" else eps_l2
            ptb = PerturbationLpNorm(norm=float("inf"), x_L=(x - eps).clamp(0, 1), x_U=(x + eps).clamp(0, 1)) \
                if norm == "linf" else PerturbationLpNorm(norm=2, eps=eps)

            def theirs():
                return bounded.compute_bounds(x=(BoundedTensor(x, ptb),), C=spec, method=LIRPA_METHODS[method],
                                              bound_upper=False)[0]

            with torch.no_grad():
                margin_lower_bound(net, x[:1], y[:1], eps, method, norm)  # warm-up: builds the op chain
                theirs()
                ours_s, theirs_s = float("inf"), float("inf")
                for _ in range(repeats):  # alternated, so both see the same machine load
                    t, ours = _best(lambda: margin_lower_bound(net, x, y, eps, method, norm), 1)
                    ours_s = min(ours_s, t)
                    t, ref = _best(theirs, 1)
                    theirs_s = min(theirs_s, t)
            row = {"net": name, "method": method, "norm": norm, "eps": eps, "ours_s": ours_s, "lirpa_s": theirs_s,
                   "ratio": ours_s / theirs_s, "looser": float((ref - ours)[mask].max()),
                   "scale": float(ref[mask].abs().max())}
            rows.append(row)
            print(f"  {name:6s} {method:9s} {norm:4s} eps {eps:<5g}: ours {ours_s:8.3f} s, auto_LiRPA {theirs_s:8.3f} s,"
                  f" ours/auto_LiRPA time x{row['ratio']:.2f}, max(theirs - ours) {row['looser']:+.1e}"
                  f" (bounds up to {row['scale']:.1e})")
    return rows
