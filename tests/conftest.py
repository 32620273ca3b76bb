"""Shared fixtures: stand-in data sets in the real on-disk formats, real MNIST, one torch thread, quiet logs.
What test files import from one another is in helpers.py."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

pytest.register_assert_rewrite("helpers")
from helpers import MNIST_CACHE_ENV, MNIST_RAW, REPO  # noqa: E402

def _share_the_cores_between_workers() -> None:
    """Under pytest-xdist (``-n N``) each worker gets cores // N intra-op threads (1 on 2 cores with
    ``-n 2``), as do the processes it starts, unless OMP_NUM_THREADS says otherwise. Two workers of two
    threads each on two cores contend: OpenMP's spinning threads cost CPU time the other worker needs
    (docs/testing.md, "Where the time goes")."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers and "OMP_NUM_THREADS" not in os.environ:
        import torch

        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        threads = max(1, cores // workers)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)


_share_the_cores_between_workers()
os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")
# the tests read generated stand-in data sets on purpose (datamodules refuse them otherwise)
os.environ["LIGHTNING_ADV_ALLOW_STANDIN"] = "1"
warnings.filterwarnings("ignore", message=".*does not have many workers.*")


@pytest.fixture(scope="session")
def digits_split():
    """scikit-learn digits (real data) as [0, 1] tensors (N, 1, 8, 8), shuffled with seed 0 and split
    1400 train / 397 test: ``(x_train, y_train, x_test, y_test)``."""
    import torch
    from sklearn.datasets import load_digits

    torch.manual_seed(0)
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target)
    perm = torch.randperm(len(y))
    x, y = x[perm], y[perm]
    return x[:1400], y[:1400], x[1400:], y[1400:]


@pytest.fixture(scope="session")
def digits_models(request, tmp_path_factory):
    """The digits models of tests/digits_models.py (natural, PGD-AT), trained once per session: in a folder of this
    session common to its xdist workers (the controller's base temporary folder; ``-n 0``: this session's own),
    so an earlier session's models are never reused."""
    from digits_models import DigitsModels

    base = tmp_path_factory.getbasetemp()
    workerinput = getattr(request.config, "workerinput", None)
    if workerinput is not None:  # xdist: <controller's basetemp>/popen-gwN
        base = base.parent
    return DigitsModels(base / "digits-models", workerinput["workerid"] if workerinput else "main")


@pytest.fixture(scope="session")
def standin_root(tmp_path_factory) -> Path:
    """CIFAR-10/100 and (Fashion-)MNIST stand-ins, read by the real torchvision loaders."""
    from lightning_adv.datamodules import write_cifar_standin, write_mnist_standin

    root = tmp_path_factory.mktemp("standins")
    write_cifar_standin(root, dataset="cifar10", n_train=64, n_test=16)
    write_cifar_standin(root, dataset="cifar100", n_train=200, n_test=16)
    write_mnist_standin(root, dataset="MNIST", n_train=64, n_test=16)
    write_mnist_standin(root, dataset="FashionMNIST", n_train=64, n_test=16)
    return root


@pytest.fixture
def one_thread():
    """One torch thread for the test: with 2 threads on 2 shared cores a WRN step can take 20x longer."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _plain_argv(monkeypatch):
    """LightningCLI(args=...) warns when pytest's own argv is also present."""
    import sys

    monkeypatch.setattr(sys, "argv", ["train.py"])


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    """A folder holding real MNIST in torchvision's layout (``<root>/MNIST/raw``): ``$LIGHTNING_ADV_MNIST_CACHE``
    or ``~/.cache/lightning-adv/mnist``, filled by ``../shared/data/mnist/make_mnist.py`` (beside the clone) only
    when a file is missing. A test aid: the project itself loads MNIST with torchvision (download when online)."""
    import subprocess
    import sys

    root = Path(os.environ.get(MNIST_CACHE_ENV) or Path.home() / ".cache" / "lightning-adv" / "mnist").expanduser()
    if not all((root / "MNIST" / "raw" / name).is_file() for name in MNIST_RAW):
        script = REPO.parent / "shared" / "data" / "mnist" / "make_mnist.py"
        if not script.is_file():
            pytest.fail(f"real MNIST is not in {root}/MNIST/raw and {script} is missing: put shared/ beside the clone "
                        f"or set {MNIST_CACHE_ENV} to a folder holding MNIST/raw")
        subprocess.run([sys.executable, str(script), str(root)], check=True, timeout=600)
    return root
