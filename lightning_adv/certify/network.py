"""The layer-walking front end of the bounds: a model as a chain of primitive operations.

Bound propagation needs the model as a plain sequence ``x -> op_1 -> ... -> op_n -> logits``.
:class:`BoundNetwork` walks a model's modules in registration order and turns each leaf into
an operation that knows its interval image (IBP) and its transpose (CROWN back-substitution):

* affine: ``Linear``, ``Conv2d`` (zero padding), ``Normalize`` and ``BatchNorm1d/2d`` in eval
  mode (a per-channel scale and shift), ``AvgPool2d``/``AdaptiveAvgPool2d`` with
  non-overlapping windows, ``Flatten``; ``Identity`` and eval-mode ``Dropout`` vanish;
* non-linear: ``ReLU``, ``MaxPool2d``/``AdaptiveMaxPool2d`` (no padding, no dilation).

Containers are walked only where the forward is the composition of the children in order:
``nn.Sequential`` and the project's ``SmallCNN``, ``MLP``, ``ConvNet6``, ``MadryCNN``; a wrapper exposing
the network as ``.model`` (a LightningModule of this project) is unwrapped. Any other module
(a residual block, Tanh, a GaussianNoise defense) is a ``ValueError`` naming the layer. The
chain is checked against the model's own forward on the first batch of every input shape,
so a forward that is not the composition of its children can never be certified silently.

The operations read the modules' parameters on every call (no copies), so a bound is a
differentiable function of the weights: certified training backpropagates through it.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.convnet import ConvNet6
from ..models.madry import MadryCNN
from ..models.normalize import Normalize
from ..models.small import MLP, SmallCNN

__all__ = ["BoundNetwork", "AffineOp", "ReLUOp", "MaxPoolOp", "SEQUENTIAL_MODELS", "SUPPORTED"]

#: module classes whose forward is the composition of their children in registration order
SEQUENTIAL_MODELS: tuple[type, ...] = (nn.Sequential, SmallCNN, MLP, ConvNet6, MadryCNN)
SUPPORTED = ("Linear, Conv2d, ReLU, BatchNorm1d/2d (eval), Flatten, MaxPool2d, AvgPool2d, AdaptiveAvg/MaxPool2d "
             "(divisible sizes), Normalize, Identity, Dropout (eval), inside nn.Sequential / small_cnn / mlp / convnet6 / "
             "madry_cnn")


class AffineOp:
    """``out = lin(x) + bias``: ``lin`` linear; ``lin_t`` its transpose; ``abs_lin`` the map with absolute weights."""

    def __init__(self, name: str, lin: Callable[[Tensor], Tensor], lin_t: Callable[[Tensor, tuple], Tensor],
                 abs_lin: Callable[[Tensor], Tensor], bias: Callable[[], Optional[Tensor]], mixing: bool = True,
                 conv: Optional[nn.Conv2d] = None, scale: Optional[Callable[[], Tensor]] = None) -> None:
        self.name, self.lin, self.lin_t, self.abs_lin, self.bias = name, lin, lin_t, abs_lin, bias
        #: False for coordinate-wise maps (scale and shift, reshape): a box maps exactly onto a box
        self.mixing = mixing
        #: the Conv2d of a convolution, the per-channel scale (C,) of a channel-wise affine map: the
        #: structure CROWN's patch back-substitution (``certify/patches.py``) exploits; None otherwise
        self.conv, self.scale = conv, scale

    def forward(self, x: Tensor) -> Tensor:
        b = self.bias()
        return self.lin(x) if b is None else self.lin(x) + b

    def interval(self, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
        mid, rad = self.forward((hi + lo) / 2), self.abs_lin((hi - lo) / 2)
        return mid - rad, mid + rad

    def back(self, A: Tensor, in_shape: tuple) -> tuple[Tensor, Tensor]:
        """``A`` (B, S, *out) on the output -> coefficients (B, S, *in) on the input and the bias term (B, S)."""
        b, s = A.shape[:2]
        flat = A.reshape(b * s, *A.shape[2:])
        bias = self.bias()
        const = A.new_zeros(b, s) if bias is None else (flat * bias).reshape(b, s, -1).sum(-1)
        return self.lin_t(flat, in_shape).reshape(b, s, *in_shape), const


class ReLUOp:
    def __init__(self, name: str) -> None:
        self.name = name

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x)

    def interval(self, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
        return F.relu(lo), F.relu(hi)


class MaxPoolOp:
    def __init__(self, name: str, kernel: int, stride: int) -> None:
        self.name, self.kernel, self.stride = name, kernel, stride

    def forward(self, x: Tensor) -> Tensor:
        return F.max_pool2d(x, self.kernel, self.stride)

    def interval(self, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
        return self.forward(lo), self.forward(hi)


def _pair(v, name: str, what: str) -> int:
    if isinstance(v, (tuple, list)):
        if len(set(v)) != 1:
            raise ValueError(f"certify: layer {name} has a non-square {what}={tuple(v)}; bounds support square ones")
        v = v[0]
    return int(v)


# ---------------------------------------------------------------- leaf -> op
def _linear(name: str, m: nn.Linear) -> AffineOp:
    return AffineOp(name, lambda x: F.linear(x, m.weight), lambda a, s: a @ m.weight,
                    lambda r: F.linear(r, m.weight.abs()), lambda: m.bias)


def _conv(name: str, m: nn.Conv2d, in_shape: tuple, out_shape: tuple) -> AffineOp:
    if m.padding_mode != "zeros" or isinstance(m.padding, str):
        raise ValueError(f"certify: layer {name} (Conv2d) uses padding={m.padding!r}, padding_mode={m.padding_mode!r}; "
                         "bounds support numeric zero padding")
    st, pd, dl = m.stride, m.padding, m.dilation
    k = m.weight.shape[-2:]
    extra = tuple(in_shape[1 + i] - ((out_shape[1 + i] - 1) * st[i] - 2 * pd[i] + dl[i] * (k[i] - 1) + 1)
                  for i in range(2))

    def lin_t(a: Tensor, s: tuple) -> Tensor:
        w = m.weight
        if m.groups > 1 or math.prod(w.shape[1:]) > 16:
            return F.conv_transpose2d(a, w, None, st, pd, extra, m.groups, dl)
        # into few input channels (the image's) a matrix product and a fold are faster on a CPU (measured)
        cols = w.reshape(w.shape[0], -1).t() @ a.flatten(2)  # (N, C_in k k, L): fold's layout, no copy
        return F.fold(cols, s[1:], w.shape[-2:], dl, pd, st)

    conv = lambda x, w: F.conv2d(x, w, None, st, pd, dl, m.groups)  # noqa: E731
    bias = lambda: None if m.bias is None else m.bias.view(1, -1, 1, 1)  # noqa: E731
    return AffineOp(name, lambda x: conv(x, m.weight), lin_t, lambda r: conv(r, m.weight.abs()), bias, conv=m)


def _channel_affine(name: str, scale: Callable[[], Tensor], shift: Callable[[], Tensor], dims: int) -> AffineOp:
    """``x * scale + shift`` per channel; ``scale``/``shift`` (C,) read at call time."""
    view = (lambda t: t.view(1, -1, 1, 1)) if dims == 4 else (lambda t: t.view(1, -1))
    return AffineOp(name, lambda x: x * view(scale()), lambda a, s: a * view(scale()),
                    lambda r: r * view(scale()).abs(), lambda: view(shift()), mixing=False,
                    scale=scale if dims == 4 else None)


def _batchnorm(name: str, m: nn.modules.batchnorm._BatchNorm, dims: int) -> AffineOp:
    if m.training or m.running_mean is None:
        raise ValueError(f"certify: layer {name} ({type(m).__name__}) is in train mode or has no running statistics; "
                         "bounds need BatchNorm in eval mode (call model.eval())")

    def scale() -> Tensor:
        # checker: running statistics checked above; read when called (after .to(device))
        s = torch.rsqrt(m.running_var + m.eps)  # type: ignore[operator, arg-type]
        return s * m.weight if m.weight is not None else s

    def shift() -> Tensor:
        # checker: running statistics checked above; read when called (after .to(device))
        b = -m.running_mean * scale()  # type: ignore[operator]
        return b + m.bias if m.bias is not None else b

    return _channel_affine(name, scale, shift, dims)


def _avgpool(name: str, k: int) -> AffineOp:
    lin = lambda x: F.avg_pool2d(x, k)  # noqa: E731

    def lin_t(a: Tensor, s: tuple) -> Tensor:
        return a.repeat_interleave(k, -1).repeat_interleave(k, -2) / (k * k)

    return AffineOp(name, lin, lin_t, lin, lambda: None)


def _flatten(name: str, in_shape: tuple) -> AffineOp:
    return AffineOp(name, lambda x: x.flatten(1), lambda a, s: a.reshape(a.shape[0], *s), lambda r: r.flatten(1),
                    lambda: None, mixing=False)


def _pool_kernel(name: str, m: nn.Module, in_shape: tuple) -> int:
    """Kernel of a pooling layer (checked: no padding, dilation, ceil mode; average pooling tiles the input)."""
    if isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        out = _pair(m.output_size, name, "output_size")
        h, w = in_shape[-2:]
        if h != w or h % out:
            raise ValueError(f"certify: layer {name} ({type(m).__name__}) maps {h}x{w} to {out}x{out}: bounds need a "
                             "square input divisible by the output size")
        return h // out
    k, s = _pair(m.kernel_size, name, "kernel_size"), _pair(m.stride or m.kernel_size, name, "stride")
    pad = _pair(m.padding, name, "padding")
    bad = pad != 0 or getattr(m, "ceil_mode", False) or _pair(getattr(m, "dilation", 1), name, "dilation") != 1
    if isinstance(m, nn.AvgPool2d):
        bad = bad or s != k or in_shape[-1] % k or in_shape[-2] % k
    if bad:
        raise ValueError(f"certify: layer {name} ({m}) is not supported: bounds need pooling without padding, "
                         "dilation or ceil_mode (average pooling: stride = kernel dividing the input)")
    return k


def _make_op(name: str, m: nn.Module, in_shape: tuple, out_shape: tuple):
    if isinstance(m, nn.Linear):
        return _linear(name, m)
    if isinstance(m, nn.Conv2d):
        return _conv(name, m, in_shape, out_shape)
    if isinstance(m, nn.ReLU):
        return ReLUOp(name)
    if isinstance(m, Normalize):
        # checker: a Normalize with mean and std (an identity Normalize is not an affine op here)
        return _channel_affine(name, lambda: 1.0 / m.std.flatten(), lambda: -m.mean.flatten() / m.std.flatten(), 4)  # type: ignore[union-attr]
    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        return _batchnorm(name, m, len(in_shape) + 1)
    if isinstance(m, nn.Flatten):
        if m.start_dim != 1 or m.end_dim != -1:
            raise ValueError(f"certify: layer {name} is Flatten(start_dim={m.start_dim}, end_dim={m.end_dim}); "
                             "bounds support Flatten() only")
        return _flatten(name, in_shape)
    if isinstance(m, (nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
        return _avgpool(name, _pool_kernel(name, m, in_shape))
    if isinstance(m, nn.MaxPool2d):
        _pool_kernel(name, m, in_shape)
        return MaxPoolOp(name, _pair(m.kernel_size, name, "kernel_size"), _pair(m.stride or m.kernel_size, name, "s"))
    if isinstance(m, nn.AdaptiveMaxPool2d):
        k = _pool_kernel(name, m, in_shape)
        return MaxPoolOp(name, k, k)
    raise ValueError(f"certify: unsupported layer {name} ({type(m).__name__}); bounds support {SUPPORTED}")


def _leaves(module: nn.Module, prefix: str) -> list[tuple[str, nn.Module]]:
    """The chain of leaf modules, in order, or a ValueError naming the first layer that is not a chain."""
    inner = getattr(module, "model", None)
    if not isinstance(module, SEQUENTIAL_MODELS) and isinstance(inner, nn.Module):
        return _leaves(inner, f"{prefix}model.")
    children = list(module.named_children())
    if not children:
        return [(prefix.rstrip(".") or type(module).__name__, module)]
    if not isinstance(module, SEQUENTIAL_MODELS):
        name = prefix.rstrip(".") or "<model>"
        raise ValueError(f"certify: unsupported layer {name} ({type(module).__name__}): its forward is not known to "
                         f"be a chain of its children; bounds support {SUPPORTED}")
    out: list[tuple[str, nn.Module]] = []
    for child_name, child in children:
        out += _leaves(child, f"{prefix}{child_name}.")
    return out


class BoundNetwork:
    """A model as a chain of operations for bound propagation (see the module docstring).

    Construction walks the modules (unsupported layers raise here); the operations for an
    input shape are built, and checked against ``model(x)``, on the first call with that shape.
    """

    def __init__(self, model: nn.Module) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"certify: the model must be an nn.Module, got {type(model).__name__}")
        self.model = model
        self.leaves = [(n, m) for n, m in _leaves(model, "")
                       if not isinstance(m, (nn.Identity, nn.Dropout)) and not (isinstance(m, Normalize)
                                                                                and m.is_identity)]
        for name, m in self.leaves:  # unsupported leaf types fail at construction, before any data
            if not isinstance(m, (nn.Linear, nn.Conv2d, nn.ReLU, Normalize, nn.BatchNorm1d, nn.BatchNorm2d,
                                  nn.Flatten, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.MaxPool2d, nn.AdaptiveMaxPool2d)):
                raise ValueError(f"certify: unsupported layer {name} ({type(m).__name__}); bounds support {SUPPORTED}")
        self._built: dict[tuple, tuple[list, list[tuple]]] = {}

    def ops(self, x: Tensor) -> tuple[list, list[tuple]]:
        """The operations for inputs shaped like ``x`` and the input shape of each (plus the output's)."""
        key = tuple(x.shape[1:])
        if key not in self._built:
            for name, m in self.leaves:
                if isinstance(m, nn.Dropout) and m.training:
                    raise ValueError(f"certify: layer {name} (Dropout) is in train mode; call model.eval()")
            ops, shapes, h = [], [key], x[:2].detach()
            with torch.no_grad():
                for name, m in self.leaves:
                    out = m(h)
                    ops.append(_make_op(name, m, tuple(h.shape[1:]), tuple(out.shape[1:])))
                    h = ops[-1].forward(h)
                    shapes.append(tuple(h.shape[1:]))
                ref = self.model(x[:2].detach())
            if ref.shape != h.shape or not torch.allclose(ref, h, rtol=1e-4, atol=1e-4 * (1 + float(ref.abs().max()))):
                raise ValueError(f"certify: the chain of layers of {type(self.model).__name__} does not reproduce its "
                                 "forward (a skip connection or a functional op?); bounds support "
                                 f"{SUPPORTED}")
            self._built[key] = (ops, shapes)
        return self._built[key]

    def forward(self, x: Tensor) -> Tensor:
        ops, _ = self.ops(x)
        for op in ops:
            x = op.forward(x)
        return x
