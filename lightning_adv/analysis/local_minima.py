"""Suboptimal local minima (thesis section 6.2): Lemma 6.1 and the bias initialisations.

Lemma 6.1: an L-layer ReLU MLP with smallest width ``s`` can reproduce any rank-``s``
affine map ``G(x) = A x + b`` on a finite set ``Omega`` with every hidden activation
``>= c > 0``. With ``A = U Sigma V`` (rank-``s`` SVD)::

    A_1 = [Sigma V; 0],           b_1 = c 1,  c = max_{x in Omega, j} |(A_1 x)_j| + 1
    A_l = [I_s 0; 0 0],           b_l = [0_s; c 1]           (1 < l < L)
    A_L = [U 0],                  b_L = -c A_L 1 + b

Near that point the MLP stays affine on the training set, so (Theorem 6.2) a local
minimum of the linear classifier is one of the MLP. :func:`lemma61_init_` writes the
construction into an :class:`~lightning_adv.models.MLP` (or any stack of ``nn.Linear``
layers with ReLUs between them); :func:`fit_linear_classifier` trains the linear model
(full-batch L-BFGS) when none is given.

Table 6.1-6.4 initialisations: :func:`init_biases_` (every ``bias`` of Linear, Conv and
BatchNorm layers set to a constant, or drawn from ``U(-a, a)``) and :func:`zero_init_`.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "lemma61_layers",
    "lemma61_init_",
    "balance_layers",
    "linear_layers",
    "first_linear_inputs",
    "fit_linear_classifier",
    "init_biases_",
    "zero_init_",
    "he_uniform_init_",
    "INIT_KINDS",
]

#: initialisations of tables 6.1-6.4 (``default`` leaves the model as built).
INIT_KINDS = ("default", "lemma61", "bias_constant", "bias_uniform", "zero", "he_uniform")


def lemma61_layers(weight: Tensor, bias: Tensor, inputs: Tensor, widths: list[int]) -> tuple[list[tuple[Tensor, Tensor]], float]:
    """Weights ``[(A_1, b_1), ..., (A_L, b_L)]`` of the Lemma 6.1 MLP and the margin ``c``.

    Args:
        weight, bias: the affine map ``G`` (``(n, m)`` and ``(n,)``).
        inputs: the finite set ``Omega`` as an ``(N, m)`` tensor (the training inputs).
        widths: hidden widths ``n_1, ..., n_{L-1}`` (at least one).

    ``s = min(widths + [n, m])``; if ``rank(A) > s`` the best rank-``s`` approximation of
    ``A`` is embedded (the lemma's rank-``s`` expression).
    """
    if not widths:
        raise ValueError("Lemma 6.1 needs at least one hidden layer (widths=[] is the linear model itself)")
    n, m = weight.shape
    if inputs.dim() != 2 or inputs.shape[1] != m:
        raise ValueError(f"inputs must have shape (N, {m}) to match the weight {tuple(weight.shape)}, got {tuple(inputs.shape)}")
    w64, b64, x64 = weight.detach().double(), bias.detach().double(), inputs.detach().double()
    s = min(min(widths), n, m)
    u, sig, vh = torch.linalg.svd(w64, full_matrices=False)
    u, sig, vh = u[:, :s], sig[:s], vh[:s]
    a1 = torch.zeros(widths[0], m, dtype=torch.float64)
    a1[:s] = sig[:, None] * vh
    c = float((x64 @ a1.T).abs().max()) + 1.0
    layers = [(a1, torch.full((widths[0],), c, dtype=torch.float64))]
    for prev, width in zip(widths, widths[1:]):
        a = torch.zeros(width, prev, dtype=torch.float64)
        a[:s, :s] = torch.eye(s, dtype=torch.float64)
        b_l = torch.full((width,), c, dtype=torch.float64)
        b_l[:s] = 0.0
        layers.append((a, b_l))
    a_last = torch.zeros(n, widths[-1], dtype=torch.float64)
    a_last[:, :s] = u
    b_last = -c * a_last.sum(dim=1) + b64
    layers.append((a_last, b_last))
    return layers, c


def linear_layers(model: nn.Module) -> list[nn.Linear]:
    """The ``nn.Linear`` layers of ``model`` in registration order."""
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def first_linear_inputs(model: nn.Module, x: Tensor) -> Tensor:
    """What the first ``nn.Linear`` of ``model`` sees on ``x`` (after normalisation and flattening)."""
    first = linear_layers(model)[0]
    seen: list[Tensor] = []
    handle = first.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach()))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    return seen[0].reshape(len(x), -1)


def balance_layers(layers: list[tuple[Tensor, Tensor]]) -> list[tuple[Tensor, Tensor]]:
    """Rescale ``(A_l, b_l)`` by ReLU's positive homogeneity so all ``||A_l||_F`` are equal.

    ``A_l <- alpha_l A_l`` and ``b_l <- (alpha_1 ... alpha_l) b_l`` with ``prod alpha_l = 1``
    leave the network function unchanged and scale layer l's activations by the positive
    ``alpha_1 ... alpha_l`` (the rescaling the thesis mentions after Theorem 6.2). The
    plain construction puts the whole margin ``c`` into the first layers, which makes the
    point very sharp (Hessian eigenvalues ~ c^2); balancing lowers that without moving the
    function.
    """
    norms = [float(a.norm()) for a, _ in layers]
    g = math.exp(sum(math.log(n) for n in norms) / len(norms))
    out, cum = [], 1.0
    for (a, b), n in zip(layers, norms):
        alpha = g / n
        cum *= alpha
        out.append((a * alpha, b * cum))
    return out


@torch.no_grad()
def lemma61_init_(model: nn.Module, weight: Tensor, bias: Tensor, x: Tensor, balance: bool = False) -> float:
    """Write the Lemma 6.1 construction of ``G(z) = weight z + bias`` into the MLP ``model``; returns ``c``.

    ``x`` are the training images as the model takes them; ``z`` is what the first
    linear layer sees (the flattened, normalised image), so ``weight`` acts on that.
    The model must be a chain of ``nn.Linear`` layers with ReLUs between them.
    ``balance`` rescales the layers (:func:`balance_layers`; same function, positive
    activations). Returns ``c`` of the unbalanced construction.
    """
    layers = linear_layers(model)
    if any(isinstance(m, (nn.Tanh, nn.GELU, nn.Sigmoid)) for m in model.modules()):
        raise ValueError("Lemma 6.1 needs ReLU activations (positive activations make the MLP affine); "
                         "build the MLP with activation='relu'")
    if len(layers) < 2:
        raise ValueError(f"Lemma 6.1 needs an MLP with a hidden layer; the model has {len(layers)} linear layer(s)")
    if tuple(weight.shape) != (layers[-1].out_features, layers[0].in_features):
        raise ValueError(f"the linear classifier's weight has shape {tuple(weight.shape)}, the MLP maps "
                         f"{layers[0].in_features} -> {layers[-1].out_features}; train it on the same data")
    z = first_linear_inputs(model, x)
    params, c = lemma61_layers(weight, bias, z, [lin.out_features for lin in layers[:-1]])
    if balance:
        params = balance_layers(params)
    for lin, (a, b) in zip(layers, params):
        if lin.bias is None:
            raise ValueError("Lemma 6.1 needs every linear layer to have a bias")
        lin.weight.copy_(a.to(lin.weight.dtype))
        lin.bias.copy_(b.to(lin.bias.dtype))
    return c


def fit_linear_classifier(z: Tensor, y: Tensor, num_classes: int, weight_decay: float = 0.0,
                          max_iter: int = 500, rank: Optional[int] = None, seed: int = 0) -> nn.Linear:
    """Multinomial logistic regression ``z -> logits`` by full-batch L-BFGS (mean CE + wd/2 ||A||^2).

    With ``rank`` below ``min(num_classes, dim)`` the weight is constrained to rank
    ``rank`` (problem 6.1 of Theorem 6.2), parametrised as ``A = U V`` from a seeded
    random start; the result is returned as a plain ``nn.Linear``.
    """
    z = z.detach().reshape(len(z), -1).float()
    dim = z.shape[1]
    lin = nn.Linear(dim, num_classes)
    nn.init.zeros_(lin.bias)
    factors: list[Tensor] = []
    if rank is not None and rank < min(num_classes, dim):
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got rank={rank}")
        gen = torch.Generator().manual_seed(seed)
        u = (torch.randn(num_classes, rank, generator=gen) * 0.1).requires_grad_(True)
        v = (torch.randn(rank, dim, generator=gen) * 0.1).requires_grad_(True)
        factors = [u, v]
        params = [u, v, lin.bias]
    else:
        nn.init.zeros_(lin.weight)
        params = list(lin.parameters())

    def weight() -> Tensor:
        return factors[0] @ factors[1] if factors else lin.weight

    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=max_iter, tolerance_grad=1e-9,
                            tolerance_change=1e-12, history_size=20, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        w = weight()
        loss = F.cross_entropy(z @ w.T + lin.bias, y) + 0.5 * weight_decay * w.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    if factors:
        with torch.no_grad():
            lin.weight.copy_(weight())
    return lin


def _bias_parameters(model: nn.Module) -> list[Tensor]:
    kinds = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.modules.batchnorm._BatchNorm)
    return [m.bias for m in model.modules() if isinstance(m, kinds) and m.bias is not None]


@torch.no_grad()
def init_biases_(model: nn.Module, kind: str, value: float, generator: Optional[torch.Generator] = None) -> int:
    """Set every bias to ``value`` (``kind="constant"``) or draw it from ``U(-value, value)`` (``"uniform"``).

    Returns the number of bias tensors changed.
    """
    biases = _bias_parameters(model)
    if not biases:
        raise ValueError(f"{type(model).__name__} has no bias parameters to initialise")
    if kind == "constant":
        for b in biases:
            b.fill_(value)
    elif kind == "uniform":
        if value <= 0:
            raise ValueError(f"a uniform bias U(-a, a) needs a > 0, got value={value}")
        for b in biases:
            b.copy_((torch.rand(b.shape, generator=generator) * 2 - 1).mul_(value).to(b))
    else:
        raise ValueError(f"kind={kind!r} is not one of ('constant', 'uniform')")
    return len(biases)


@torch.no_grad()
def zero_init_(model: nn.Module) -> None:
    """Every trainable parameter to zero (tables 6.2-6.4 'Zero')."""
    for p in model.parameters():
        if p.requires_grad:
            p.zero_()


@torch.no_grad()
def he_uniform_init_(model: nn.Module) -> int:
    """Uniform He initialisation of every conv / linear weight (``U(-b, b)``, ``b = sqrt(6 / fan_in)``), zero biases.

    The NTK experiments of section 6.4 initialise all models this way. Returns the
    number of layers changed; BatchNorm and other parameters keep their values.
    """
    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))]
    for m in layers:
        nn.init.kaiming_uniform_(m.weight, a=0.0, nonlinearity="relu")
        if m.bias is not None:
            m.bias.zero_()
    return len(layers)
