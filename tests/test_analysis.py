"""The pure chapter-6 analysis functions against explicit reference computations (fast, CPU)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightning_adv.analysis import (
    DatasetHessian,
    conv_operator_matrix,
    conv_singular_values,
    effective_rank,
    effective_ranks,
    empirical_ntk,
    empirical_ntk_loop,
    extreme_eigenvalues,
    full_hessian,
    init_biases_,
    kernel_correlation,
    layer_input_sizes,
    lemma61_init_,
    linear_layers,
    linear_singular_values,
    project_conv,
    project_linear,
    project_model_,
    zero_init_,
)
from lightning_adv.analysis.spectral import operator_layers
from lightning_adv.models import MLP


# --------------------------------------------------------------------------------------
# Singular values of convolutions (Sedghi et al.) and effective rank
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("c_out", "c_in", "k", "n"), [(3, 2, 3, 5), (2, 4, 3, 6), (3, 3, 1, 4), (2, 2, 5, 5)])
def test_fft_singular_values_equal_the_svd_of_the_explicit_circular_conv_matrix(c_out, c_in, k, n) -> None:
    torch.manual_seed(0)
    w = torch.randn(c_out, c_in, k, k, dtype=torch.float64)
    matrix = conv_operator_matrix(w, n)
    assert matrix.shape == (c_out * n * n, c_in * n * n)
    # the explicit matrix really is F.conv2d with circular padding
    x = torch.randn(1, c_in, n, n, dtype=torch.float64)
    p = (k - 1) // 2
    ref = F.conv2d(F.pad(x, (p, k - 1 - p, p, k - 1 - p), mode="circular"), w)
    assert torch.allclose((matrix @ x.reshape(-1)).reshape(ref.shape), ref, atol=1e-10)
    fft_sv = torch.sort(conv_singular_values(w, n), descending=True).values
    svd_sv = torch.linalg.svdvals(matrix)[: fft_sv.numel()]
    assert fft_sv.numel() == n * n * min(c_in, c_out)
    assert torch.allclose(fft_sv, svd_sv, atol=1e-5, rtol=0)
    # float32 weights as in a real layer
    fft32 = torch.sort(conv_singular_values(w.float(), n), descending=True).values
    assert torch.allclose(fft32.double(), svd_sv, atol=1e-5)


def test_linear_singular_values_and_effective_rank_of_orthogonal_and_rank_one_operators() -> None:
    torch.manual_seed(0)
    w = torch.randn(7, 5)
    assert torch.allclose(linear_singular_values(w), torch.linalg.svdvals(w))
    q, _ = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64))
    assert effective_rank(linear_singular_values(q)) == pytest.approx(6 ** 0.5, rel=1e-9)
    rank_one = torch.outer(torch.randn(6), torch.randn(4))
    assert effective_rank(linear_singular_values(rank_one)) == pytest.approx(1.0, rel=1e-5)
    # a conv with a single nonzero 1x1 tap that is orthogonal across channels is orthogonal: r = sqrt(n^2 c)
    conv = torch.zeros(4, 4, 3, 3, dtype=torch.float64)
    conv[:, :, 1, 1] = torch.linalg.qr(torch.randn(4, 4, dtype=torch.float64))[0]
    assert effective_rank(conv_singular_values(conv, 5)) == pytest.approx((25 * 4) ** 0.5, rel=1e-9)
    # a rank-one channel map that is constant in space: one nonzero singular value per operator
    conv1 = torch.zeros(3, 2, 1, 1, dtype=torch.float64)
    conv1[:, :, 0, 0] = torch.outer(torch.randn(3, dtype=torch.float64), torch.randn(2, dtype=torch.float64))
    assert effective_rank(conv_singular_values(conv1, 4)) == pytest.approx(4.0, rel=1e-9)  # n^2 equal values


# --------------------------------------------------------------------------------------
# RankMin / RankMax projections
# --------------------------------------------------------------------------------------


def _conv_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4),
    )


@pytest.mark.parametrize(("mode", "threshold"), [("min", 0.8), ("max", 0.3)])
def test_rank_projection_moves_the_effective_rank_of_every_layer_and_reports_the_crop_error(mode, threshold) -> None:
    net = _conv_net()
    sizes = layer_input_sizes(net, torch.rand(1, 3, 8, 8))
    assert sizes == {"0": 8, "2": 8}
    before = effective_ranks(net, sizes)
    # what the projection asks for, per layer, before the crop back to k x k
    targets = {}
    for name, m in operator_layers(net):
        if isinstance(m, nn.Conv2d):
            from lightning_adv.analysis import project_singular_values
            s = conv_singular_values(m.weight, sizes[name])
            targets[name] = torch.sort(project_singular_values(s, mode, threshold), descending=True).values
    done = project_model_(net, sizes, mode, threshold)
    assert done == ["0", "2", "6", "8"]
    after = effective_ranks(net, sizes)
    for name in before:
        if mode == "min":
            assert after[name] < before[name], (name, before[name], after[name])
        else:
            assert after[name] > before[name], (name, before[name], after[name])
    # Linear layers are projected exactly; conv layers are cropped back to 3x3 (approximate).
    report = []
    for name, m in operator_layers(net):
        if isinstance(m, nn.Conv2d):
            got = torch.sort(conv_singular_values(m.weight, sizes[name]), descending=True).values
            rel = float((got - targets[name]).norm() / targets[name].norm())
            report.append(f"{mode} layer {name}: ||s_cropped - s_target|| / ||s_target|| = {rel:.3f}, "
                          f"r before {before[name]:.2f} / target {effective_rank(targets[name]):.2f} / "
                          f"after {after[name]:.2f}")
            assert rel < 1.0  # the crop keeps the kernel near its projection, not on it
    print("\n".join(report))


def test_rank_projection_of_linear_layers_is_exact_and_arguments_are_checked() -> None:
    torch.manual_seed(0)
    w = torch.randn(6, 9)
    s = torch.linalg.svdvals(w)
    low = project_linear(w, "min", 0.5)
    assert torch.allclose(torch.linalg.svdvals(low), torch.where(s >= 0.5 * s[0], s, 0 * s), atol=1e-5)
    high = project_linear(w, "max", 2.0, relative=False)
    assert torch.allclose(torch.linalg.svdvals(high), s.clamp(max=2.0), atol=1e-5)
    with pytest.raises(ValueError, match="mode"):
        project_linear(w, "middle", 0.5)
    with pytest.raises(ValueError, match="threshold"):
        project_linear(w, "min", 1.5)
    with pytest.raises(ValueError, match="n=2"):
        project_conv(torch.randn(2, 2, 3, 3), 2, "min", 0.5)


# --------------------------------------------------------------------------------------
# Empirical NTK
# --------------------------------------------------------------------------------------


class _BNNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.relu(self.bn(self.conv(x))).flatten(1))


def test_ntk_equals_the_kernel_from_explicit_per_example_jacobians_with_batchnorm() -> None:
    torch.manual_seed(0)
    net = _BNNet()
    net.train()(torch.randn(16, 1, 4, 4) * 3 + 1)  # running statistics away from (0, 1)
    x = torch.randn(5, 1, 4, 4)
    kernel = empirical_ntk(net, x)
    assert kernel.shape == (5, 5, 3, 3)
    assert net.training  # mode restored
    # reference written out: Jacobian rows of each (example, output) in eval mode
    net.eval()
    params = [p for p in net.parameters()]
    jac = torch.zeros(5, 3, sum(p.numel() for p in params))
    for i in range(5):
        out = net(x[i : i + 1])[0]
        for k in range(3):
            jac[i, k] = torch.cat([g.reshape(-1) for g in torch.autograd.grad(out[k], params, retain_graph=True)])
    ref = torch.einsum("iap,jbp->ijab", jac, jac)
    assert torch.allclose(kernel, ref, atol=1e-4, rtol=1e-4)
    assert torch.allclose(empirical_ntk_loop(net, x), ref, atol=1e-4, rtol=1e-4)
    # chunked vmap gives the same kernel; eval mode means batch composition does not matter
    assert torch.allclose(empirical_ntk(net, x, chunk_size=2, method="vmap"), kernel, atol=1e-5)
    assert torch.allclose(empirical_ntk(net, x, per_tensor=True, method="vmap"), kernel, atol=1e-5)
    assert torch.allclose(empirical_ntk(net, x[:2]), kernel[:2, :2], atol=1e-5)
    assert kernel_correlation(kernel, kernel) == pytest.approx(1.0, abs=1e-12)
    assert kernel_correlation(kernel, 3.0 * kernel + 1.0) == pytest.approx(1.0, abs=1e-12)
    other = empirical_ntk(_BNNet(), x)
    assert kernel_correlation(kernel, other) < 0.999


class _Block(nn.Module):
    """In-place ReLU, a residual ``+=``, a Linear over positions, a frozen bias and a parameter-free
    layer: what the layer-by-layer NTK must get right."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=2, dilation=2, bias=False)
        self.pos = nn.Linear(4, 3)  # applied at every position of a (N, 9, 4) sequence
        self.fc = nn.Linear(27, 5)
        self.fc.bias.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn(self.conv1(x)), inplace=True)
        r = self.conv2(h)
        r += h  # in place on a recorded layer output
        h = F.avg_pool2d(r, 2)  # (N, 4, 3, 3)
        return self.fc(self.pos(h.flatten(2).transpose(1, 2)).flatten(1))


@pytest.mark.parametrize("net_fn", [_Block, lambda: nn.Sequential(nn.Flatten(), nn.Linear(72, 16), nn.ReLU(inplace=True),
                                                                  nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 5))],
                         ids=["conv_bn_residual", "mlp"])
def test_layerwise_ntk_equals_the_vmap_and_loop_kernels(net_fn) -> None:
    torch.manual_seed(0)
    net = net_fn()
    net.train()(torch.randn(8, 2, 6, 6) * 2 + 1)  # BatchNorm statistics away from (0, 1)
    x = torch.randn(6, 2, 6, 6)
    ref = empirical_ntk_loop(net, x)
    for method in ("layerwise", "vmap", "auto"):
        kernel = empirical_ntk(net, x, method=method)
        assert kernel.shape == (6, 6, 5, 5) and net.training
        assert torch.allclose(kernel, ref, atol=1e-4, rtol=1e-4), method


class _ConvZoo(nn.Module):
    """Grouped, strided, rectangular and bias-free convolutions, an eval-mode BatchNorm and several outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 6, 3, stride=2, padding=1, groups=2)
        self.bn = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 4, (3, 2), stride=(1, 2), padding=(1, 0), groups=2, bias=False)
        self.conv3 = nn.Conv2d(4, 5, 1)
        self.fc = nn.Linear(5 * 4 * 2, 7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.bn(self.conv1(x)))
        return self.fc(F.relu(self.conv3(F.relu(self.conv2(h)))).flatten(1))


@pytest.mark.parametrize("way", ["rows", "rows_one_channel_at_a_time", "positions"])
def test_layerwise_ntk_of_grouped_strided_convolutions_equals_the_loop(way, monkeypatch) -> None:
    from lightning_adv.analysis import ntk_layerwise

    if way == "rows_one_channel_at_a_time":
        monkeypatch.setattr(ntk_layerwise, "CHUNK_ELEMENTS", 1)
    costs = {"positions": (1.0, 0.0)}.get(way, (0.0, 1.0))  # which way each convolution takes
    monkeypatch.setattr(ntk_layerwise, "conv_gram_macs", lambda *args: costs)
    torch.manual_seed(0)
    net = _ConvZoo()
    net.train()(torch.randn(8, 2, 8, 8) * 2 + 1)  # BatchNorm statistics away from (0, 1)
    x = torch.randn(5, 2, 8, 8)
    assert ntk_layerwise.supported(net)
    kernel = empirical_ntk(net, x, method="layerwise")
    assert kernel.shape == (5, 5, 7, 7) and net.training
    assert torch.allclose(kernel, kernel.permute(1, 0, 3, 2))  # the triangle mirrored
    assert torch.allclose(kernel, empirical_ntk_loop(net, x), atol=1e-5, rtol=1e-4)


def test_ntk_falls_back_to_vmap_for_layers_it_does_not_know() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 4, 3, groups=2), nn.GroupNorm(2, 4), nn.Flatten(), nn.Linear(64, 3))
    x = torch.randn(4, 2, 6, 6)
    assert torch.allclose(empirical_ntk(net, x), empirical_ntk_loop(net, x), atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="method='vmap'"):
        empirical_ntk(net, x, method="layerwise")
    with pytest.raises(ValueError, match="method must be one of"):
        empirical_ntk(net, x, method="fast")


# --------------------------------------------------------------------------------------
# Hessian eigenvalues
# --------------------------------------------------------------------------------------


def _hessian_problem() -> DatasetHessian:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))
    x, y = torch.randn(30, 5), torch.randint(0, 3, (30,))
    return DatasetHessian(net, [(x[:16], y[:16]), (x[16:], y[16:])])


@pytest.mark.parametrize(("method", "iterations"), [("lanczos", 30), ("power", 3000)])
def test_hessian_extreme_eigenvalues_match_eigvalsh_of_the_full_hessian(method, iterations) -> None:
    h = _hessian_problem()
    full = full_hessian(h.hvp, h.dim)
    assert torch.allclose(full, full.T, atol=1e-6)
    ev = torch.linalg.eigvalsh((full + full.T) / 2)
    assert ev[0] < -1e-2 < 1e-2 < ev[-1]  # an indefinite Hessian at a random point
    res = extreme_eigenvalues(h.hvp, h.dim, method=method, iterations=iterations, tol=1e-10)
    assert res.largest == pytest.approx(float(ev[-1]), rel=0.01)
    assert res.smallest == pytest.approx(float(ev[0]), rel=0.01)
    if method == "lanczos":
        assert res.matvecs <= 30 < h.dim


def _hessian_data() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    return net, torch.randn(21, 4), torch.randint(0, 3, (21,))


def _gloo_worker(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)

    def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
        t = t.clone()
        dist.all_reduce(t)
        return t

    net, x, y = _hessian_data()
    shard = DatasetHessian(net, [(x[rank::world], y[rank::world])], reduce=all_reduce_sum)  # 11 and 10 examples
    loss, grad = shard.loss_and_gradient()
    res = extreme_eigenvalues(shard.hvp, shard.dim, iterations=40)
    if rank == 0:
        torch.save({"count": shard.count, "loss": loss, "grad": grad, "largest": res.largest,
                    "smallest": res.smallest}, out)
    dist.destroy_process_group()


def test_hessian_under_two_gloo_processes_equals_the_full_data_hessian(tmp_path) -> None:
    """The DDP reduction: each rank's sums are all-reduced and divided by the global count."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = str(tmp_path / "rank0.pt")
    # forked, not spawned: two fresh interpreters would spend ~5 s each importing torch (the worker sets one thread
    # before any OpenMP work)
    mp.start_processes(_gloo_worker, args=(2, port, out), nprocs=2, join=True, start_method="fork")
    got = torch.load(out, weights_only=True)
    net, x, y = _hessian_data()
    whole = DatasetHessian(net, [(x, y)])
    loss, grad = whole.loss_and_gradient()
    ev = torch.linalg.eigvalsh(full_hessian(whole.hvp, whole.dim))
    assert got["count"] == 21
    assert got["loss"] == pytest.approx(loss, rel=1e-6)
    assert loss == pytest.approx(float(F.cross_entropy(net(x), y).detach()), rel=1e-6)
    assert torch.allclose(got["grad"], grad, atol=1e-7)
    assert got["largest"] == pytest.approx(float(ev[-1]), rel=1e-4)
    assert got["smallest"] == pytest.approx(float(ev[0]), rel=1e-4)


# --------------------------------------------------------------------------------------
# Lemma 6.1 and the bias initialisations
# --------------------------------------------------------------------------------------


def _affine_of(layers: list[nn.Linear]) -> tuple[torch.Tensor, torch.Tensor]:
    """A(phi) = A_L ... A_1 and b(phi) = sum_l A_L ... A_{l+1} b_l, differentiable in the weights."""
    a, b = layers[0].weight, layers[0].bias
    for lin in layers[1:]:
        a, b = lin.weight @ a, lin.weight @ b + lin.bias
    return a, b


@pytest.mark.parametrize("hidden", [(12,), (16, 11, 20), (10, 10)])
def test_lemma61_mlp_reproduces_the_linear_classifier_with_positive_activations(hidden) -> None:
    torch.manual_seed(0)
    x = torch.rand(40, 1, 4, 4)
    y = torch.randint(0, 10, (40,))
    w, b = torch.randn(10, 16), torch.randn(10)
    mlp = MLP(4, num_classes=10, hidden=hidden, mean=[0.5], std=[0.3])
    c = lemma61_init_(mlp, w, b, x)
    z = (x - 0.5).div(0.3).flatten(1)
    linear_out = z @ w.T + b
    assert torch.allclose(mlp(x), linear_out, atol=1e-4)
    acts: list[torch.Tensor] = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: acts.append(out)) for m in mlp.modules()
             if isinstance(m, nn.ReLU)]
    mlp(x)
    for h in hooks:
        h.remove()
    assert len(acts) == len(hidden)
    # every activation >= 1 > 0 (c - max |(A_1 z)_j| = 1; the proof's 'all >= c' holds for the padding units)
    assert all(bool((a >= 1 - 1e-4).all()) for a in acts)
    if max(hidden) > 10:  # units beyond the rank s carry the constant c
        assert c > 1 and any(bool((a - c).abs().min() < 1e-4) for a in acts)
    # the loss on the training set is the linear loss composed with phi -> (A(phi), b(phi)),
    # so the gradient is the chain rule of the linear model's gradient ...
    loss = F.cross_entropy(mlp(x), y)
    grads = torch.autograd.grad(loss, list(mlp.parameters()))
    a_phi, b_phi = _affine_of(linear_layers(mlp))
    chain = torch.autograd.grad(F.cross_entropy(z @ a_phi.T + b_phi, y), list(mlp.parameters()))
    for g, r in zip(grads, chain):
        assert torch.allclose(g, r, atol=1e-4, rtol=1e-3)
    # ... and, for the output bias, the linear model's gradient itself
    lin_w, lin_b = w.clone().requires_grad_(True), b.clone().requires_grad_(True)
    g_w, g_b = torch.autograd.grad(F.cross_entropy(z @ lin_w.T + lin_b, y), [lin_w, lin_b])
    assert torch.allclose(grads[-1], g_b, atol=1e-5)
    last = linear_layers(mlp)[-1]
    u = last.weight[:, :10].detach()
    sigma_v = linear_layers(mlp)[0].weight[:10].detach()
    # dL/dA_L[:, :s] = G_A (Sigma V)^T + c g_b 1^T
    assert torch.allclose(grads[-2][:, :10], g_w @ sigma_v.T + c * g_b[:, None], atol=1e-3, rtol=1e-3)
    assert torch.allclose(u @ sigma_v, w, atol=1e-4)


def test_lemma61_at_a_stationary_linear_classifier_is_a_stationary_mlp() -> None:
    from lightning_adv.analysis import fit_linear_classifier

    torch.manual_seed(0)
    x, y = torch.rand(60, 1, 3, 3), torch.randint(0, 4, (60,))
    lin = fit_linear_classifier(x.flatten(1), y, 4, weight_decay=0.0, max_iter=2000)
    loss_lin = F.cross_entropy(lin(x.flatten(1)), y)
    g_lin = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss_lin, list(lin.parameters()))])
    mlp = MLP(3, num_classes=4, hidden=(8, 8))
    lemma61_init_(mlp, lin.weight, lin.bias, x)
    loss_mlp = F.cross_entropy(mlp(x), y)
    g_mlp = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss_mlp, list(mlp.parameters()))])
    assert float(loss_mlp.detach()) == pytest.approx(float(loss_lin.detach()), abs=1e-5)
    assert g_lin.norm() < 1e-3 and g_mlp.norm() < 1e-2, (float(g_lin.norm()), float(g_mlp.norm()))


def test_lemma61_refuses_what_it_cannot_build() -> None:
    x = torch.rand(4, 1, 3, 3)
    with pytest.raises(ValueError, match="hidden layer"):
        lemma61_init_(MLP(3, num_classes=4, hidden=()), torch.randn(4, 9), torch.randn(4), x)
    with pytest.raises(ValueError, match="relu"):
        lemma61_init_(MLP(3, num_classes=4, hidden=(5,), activation="tanh"), torch.randn(4, 9), torch.randn(4), x)
    with pytest.raises(ValueError, match="shape"):
        lemma61_init_(MLP(3, num_classes=4, hidden=(5,)), torch.randn(3, 9), torch.randn(3), x)


def test_bias_and_zero_initialisations() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(2, 3))
    assert init_biases_(net, "constant", 20.0) == 3
    assert all(torch.all(m.bias == 20) for m in (net[0], net[1], net[3]))
    init_biases_(net, "uniform", 50.0, generator=torch.Generator().manual_seed(0))
    biases = torch.cat([net[0].bias, net[1].bias, net[3].bias])
    assert biases.abs().max() <= 50 and biases.std() > 5
    assert torch.all(net[1].weight == 1)  # weights untouched
    with pytest.raises(ValueError, match="kind"):
        init_biases_(net, "normal", 1.0)
    zero_init_(net)
    assert all(torch.all(p == 0) for p in net.parameters())
