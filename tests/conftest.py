"""Shared fixtures: stand-in data sets in the real on-disk formats, repo paths, quiet logs."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DISTILL_PREFIXES = ("kd_", "ard_", "fastard_")
#: add-on configs for `test` (a second --config); run by test_attack_suite_cli.py
EVAL_PREFIXES = ("eval_",)
#: chapter-6 configs (natural accuracy, analysis callbacks): run by test_ch6_configs.py
CH6_PREFIXES = ("ch6_",)
#: few-shot configs (issue 4), run by test_fewshot_configs.py
FEWSHOT_PREFIXES = ("aq_",)
#: chapter-3 order-book configs (LOBSTER data), run by test_orderbook_attacks.py
LOB_PREFIXES = ("lob_",)
#: pre-processing defense (purifier) training configs (thesis 5.5), run by test_purifier_configs.py
PURIFIER_PREFIXES = ("purifier_",)
#: defensive distillation (teacher then student), run by test_defensive_distillation.py
DEFDISTILL_PREFIXES = ("defensive_distillation_",)
#: certified training and smoothing configs (issue 15), run by test_certified_configs.py
CERTIFIED_PREFIXES = ("certified_", "smoothing_")
#: configs that need no teacher; the distillation configs are run by test_distill_configs.py
CONFIGS = sorted(p for p in (REPO / "configs").glob("*.yaml")
                 if not p.name.startswith(DISTILL_PREFIXES + EVAL_PREFIXES + CH6_PREFIXES + FEWSHOT_PREFIXES
                                          + LOB_PREFIXES + DEFDISTILL_PREFIXES + PURIFIER_PREFIXES
                                          + CERTIFIED_PREFIXES))



def load_config(path: Path) -> dict:
    """A config file as a dict with its shared blocks filled in, as the CLI reads them: a string value
    naming an existing ``.yaml`` file (relative to the including file, e.g. ``_shared/optim/x.yaml``)
    becomes that file's content (docs/config-composition.md). CLI defaults (the logger's class) are not added."""
    import yaml

    def fill(value, folder: Path):
        if isinstance(value, str) and value.endswith(".yaml") and (folder / value).is_file():
            return load_config(folder / value)
        if isinstance(value, dict):
            return {k: fill(v, folder) for k, v in value.items()}
        if isinstance(value, list):
            return [fill(v, folder) for v in value]
        return value

    path = Path(path)
    return fill(yaml.safe_load(path.read_text()), path.resolve().parent)


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
def standin_root(tmp_path_factory) -> Path:
    """CIFAR-10/100 and (Fashion-)MNIST stand-ins, read by the real torchvision loaders."""
    from lightning_adv.datamodules import write_cifar_standin, write_mnist_standin

    root = tmp_path_factory.mktemp("standins")
    write_cifar_standin(root, dataset="cifar10", n_train=64, n_test=16)
    write_cifar_standin(root, dataset="cifar100", n_train=200, n_test=16)
    write_mnist_standin(root, dataset="MNIST", n_train=64, n_test=16)
    write_mnist_standin(root, dataset="FashionMNIST", n_train=64, n_test=16)
    return root


@pytest.fixture(autouse=True)
def _plain_argv(monkeypatch):
    """LightningCLI(args=...) warns when pytest's own argv is also present."""
    import sys

    monkeypatch.setattr(sys, "argv", ["train.py"])


#: where the real-MNIST tests keep MNIST/raw (made once by the shared script, then reused)
MNIST_CACHE_ENV = "LIGHTNING_ADV_MNIST_CACHE"
MNIST_RAW = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


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
