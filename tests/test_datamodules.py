"""Tests of the ``datamodules`` package.

The real loaders of torchvision run on generated stand-ins written in the original file
formats (no network here); Fashion-MNIST is also tested on the real files of Debian's
``dataset-fashion-mnist`` package when it is installed.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import pickle
import subprocess
import sys
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from lightning_adv.datamodules import (
    CIFAR10DataModule,
    CIFAR100DataModule,
    DataNotFoundError,
    DigitsDataModule,
    FashionMNISTDataModule,
    MNISTDataModule,
    STANDIN_MARKER,
    StandInDataWarning,
    write_cifar_standin,
    write_mnist_standin,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

N_TRAIN, N_TEST = 200, 60


def _first_batch(loader: Any) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = next(iter(loader))
    return x, y


def _assert_images(x: torch.Tensor, y: torch.Tensor, shape: tuple[int, ...], num_classes: int) -> None:
    assert x.dtype == torch.float32
    assert tuple(x.shape[1:]) == shape
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert float(x.max()) > 0.5  # not all black: the conversion to [0,1] did not squash the data
    assert y.dtype == torch.int64
    assert int(y.min()) >= 0 and int(y.max()) < num_classes


# ---------------------------------------------------------------------------- digits
def test_digits_shapes_range_and_dtype() -> None:
    dm = DigitsDataModule(batch_size=32, eval_batch_size=100)
    dm.prepare_data()
    dm.setup()
    assert (dm.num_classes, dm.input_shape, dm.name) == (10, (1, 8, 8), "digits")
    for loader, size in ((dm.train_dataloader(), 32), (dm.val_dataloader(), 100), (dm.test_dataloader(), 100)):
        x, y = _first_batch(loader)
        assert x.shape[0] == size
        _assert_images(x, y, (1, 8, 8), 10)
    # 0..16 was divided by 16: the brightest pixels are exactly 1.
    assert float(dm.test_dataset[0][0].max()) <= 1.0
    assert any(float(dm.test_dataset[i][0].max()) == 1.0 for i in range(10))


def test_digits_split_sizes_disjoint_and_complete() -> None:
    dm = DigitsDataModule(val_size=0.1, test_size=0.25)
    dm.setup()
    n_train, n_val, n_test = len(dm.train_dataset), len(dm.val_dataset), len(dm.test_dataset)
    assert n_train + n_val + n_test == 1797
    assert n_test == 450  # ceil(0.25 * 1797), stratified
    assert n_val == round(0.1 * (1797 - 450))
    train_idx, val_idx = set(dm.train_dataset.indices), set(dm.val_dataset.indices)
    assert not train_idx & val_idx
    assert train_idx | val_idx == set(range(1797 - 450))
    pool, test = set(dm.train_pool_indices), set(dm.test_indices)
    assert not pool & test and pool | test == set(range(1797))
    # Stratified test split: every class has 44 or 46 test images (~25% of ~180).
    counts = torch.bincount(torch.tensor([int(y) for _, y in dm.test_dataset]), minlength=10)
    assert int(counts.min()) >= 43 and int(counts.max()) <= 47


def test_digits_absolute_val_size() -> None:
    dm = DigitsDataModule(val_size=300)
    dm.setup("fit")
    assert len(dm.val_dataset) == 300 and len(dm.train_dataset) == 1347 - 300
    assert dm.test_dataset is None  # stage "fit" does not load the test split


def test_digits_seed_determinism() -> None:
    def split(seed: int) -> tuple[list[int], list[int], list[int]]:
        dm = DigitsDataModule(seed=seed)
        dm.setup()
        return dm.train_dataset.indices, dm.val_dataset.indices, dm.test_indices

    a, b, c = split(0), split(0), split(1)
    assert a == b
    assert a[1] != c[1]  # another seed, another validation split
    assert a[2] == c[2]  # the test split is fixed, whatever the seed


def test_digits_augmentation_only_in_train() -> None:
    dm = DigitsDataModule(augment=True)
    dm.setup()
    raw = dm.train_dataset.dataset  # the untransformed TensorDataset
    index = dm.train_dataset.indices[0]
    draws = [dm.train_dataset[0][0] for _ in range(30)]
    assert any(not torch.equal(d, raw[index][0]) for d in draws), "augment=True never shifted the image"
    assert dm.val_dataset.transform is None and dm.test_dataset.transform is None
    val_index = dm.val_dataset.indices[0]
    for _ in range(5):
        assert torch.equal(dm.val_dataset[0][0], raw[val_index][0])
    # Default: no augmentation at all.
    plain = DigitsDataModule()
    plain.setup("fit")
    assert torch.equal(plain.train_dataset[0][0], plain.train_dataset.dataset[plain.train_dataset.indices[0]][0])


def test_val_size_zero_disables_validation() -> None:
    dm = DigitsDataModule(val_size=0)
    dm.setup("fit")
    assert len(dm.train_dataset) == 1347
    assert dm.val_dataloader() == []


def test_dataloader_before_setup_is_explained() -> None:
    with pytest.raises(RuntimeError, match=r"setup\('fit'\)"):
        DigitsDataModule().train_dataloader()


def test_dataloader_options() -> None:
    dm = DigitsDataModule(batch_size=100, num_workers=2, drop_last=True, pin_memory=False)
    dm.setup()
    train, val = dm.train_dataloader(), dm.val_dataloader()
    assert train.persistent_workers and train.num_workers == 2 and train.drop_last
    assert not val.drop_last and val.batch_size == 100
    assert len(train) == len(dm.train_dataset) // 100
    x, y = _first_batch(train)  # through worker processes
    _assert_images(x, y, (1, 8, 8), 10)
    dm0 = DigitsDataModule()
    dm0.setup("fit")
    assert dm0.train_dataloader().persistent_workers is False


# ---------------------------------------------------------------------------- argument checks
@pytest.mark.parametrize(
    ("cls", "kwargs", "parameter"),
    [
        (DigitsDataModule, {"batch_size": 0}, "batch_size"),
        (DigitsDataModule, {"batch_size": 2.5}, "batch_size"),
        (DigitsDataModule, {"eval_batch_size": -1}, "eval_batch_size"),
        (DigitsDataModule, {"num_workers": -1}, "num_workers"),
        (DigitsDataModule, {"val_size": -0.1}, "val_size"),
        (DigitsDataModule, {"val_size": 1.0}, "val_size"),
        (DigitsDataModule, {"val_size": -3}, "val_size"),
        (DigitsDataModule, {"val_size": 1347}, "val_size"),
        (DigitsDataModule, {"val_size": True}, "val_size"),
        (DigitsDataModule, {"seed": -1}, "seed"),
        (DigitsDataModule, {"test_size": 0.0}, "test_size"),
        (DigitsDataModule, {"test_size": 1.5}, "test_size"),
        (DigitsDataModule, {"augment": "yes"}, "augment"),
        (DigitsDataModule, {"data_dir": ""}, "data_dir"),
        (CIFAR10DataModule, {"val_size": 50_000}, "val_size"),
        (CIFAR100DataModule, {"batch_size": -5}, "batch_size"),
        (MNISTDataModule, {"val_size": 60_000}, "val_size"),
        (FashionMNISTDataModule, {"local_source": ""}, "local_source"),
    ],
)
def test_bad_arguments_raise_value_error(cls: type, kwargs: dict[str, Any], parameter: str) -> None:
    with pytest.raises(ValueError) as info:
        cls(**kwargs)
    message = str(info.value)
    assert f"{parameter}={next(iter(kwargs.values()))!r}" in message  # names the parameter and the value


def test_absolute_val_size_checked_against_the_data(tmp_path: Path) -> None:
    write_cifar_standin(tmp_path, "cifar10", n_train=50, n_test=10)
    dm = CIFAR10DataModule(data_dir=str(tmp_path), val_size=50)  # < 50,000 so accepted at first
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StandInDataWarning)
        with pytest.raises(ValueError, match=r"val_size=50 .*50 examples"):
            dm.setup("fit")


# ---------------------------------------------------------------------------- stand-ins
@pytest.fixture(scope="module")
def standin_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("standins")
    write_cifar_standin(root, "cifar10", n_train=N_TRAIN, n_test=N_TEST, seed=0)
    write_cifar_standin(root, "cifar100", n_train=N_TRAIN, n_test=N_TEST, seed=0)
    write_mnist_standin(root, "MNIST", n_train=N_TRAIN, n_test=N_TEST, seed=0)
    write_mnist_standin(root, "FashionMNIST", n_train=N_TRAIN, n_test=N_TEST, seed=0)
    return root


def test_standin_files_have_the_original_layout(standin_root: Path) -> None:
    cifar10 = standin_root / "cifar-10-batches-py"
    names = sorted(p.name for p in cifar10.iterdir())
    assert names == sorted([STANDIN_MARKER, "batches.meta", "test_batch"] + [f"data_batch_{i}" for i in range(1, 6)])
    with open(cifar10 / "data_batch_1", "rb") as handle:
        batch = pickle.load(handle, encoding="latin1")
    assert batch["data"].dtype == np.uint8 and batch["data"].shape == (N_TRAIN // 5, 3072)
    cifar100 = standin_root / "cifar-100-python"
    assert {p.name for p in cifar100.iterdir()} == {STANDIN_MARKER, "train", "test", "meta"}
    raw = standin_root / "MNIST" / "raw"
    header = (raw / "train-images-idx3-ubyte").read_bytes()[:16]
    assert header == bytes.fromhex("00000803") + N_TRAIN.to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    manifest = json.loads((standin_root / "MNIST" / STANDIN_MARKER).read_text())
    assert hashlib.md5((raw / "t10k-labels-idx1-ubyte").read_bytes()).hexdigest() == manifest["md5"]["raw/t10k-labels-idx1-ubyte"]


def test_standins_are_deterministic_and_learnable(tmp_path: Path) -> None:
    a = write_cifar_standin(tmp_path / "a", "cifar10", n_train=300, n_test=100, seed=3)
    b = write_cifar_standin(tmp_path / "b", "cifar10", n_train=300, n_test=100, seed=3)
    md5_a = json.loads((a / STANDIN_MARKER).read_text())["md5"]
    assert md5_a == json.loads((b / STANDIN_MARKER).read_text())["md5"]
    # A nearest-class-mean classifier must do far better than chance (10%).
    from torchvision.datasets import CIFAR10

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StandInDataWarning)
        dm = CIFAR10DataModule(data_dir=str(tmp_path / "a"))
        train, test = dm._load_split(True), dm._load_split(False)
    assert isinstance(train, CIFAR10)
    means = np.stack([train.data[np.array(train.targets) == c].mean(axis=(0, 1, 2)) for c in range(10)])
    pred = np.argmin(((test.data.mean(axis=(1, 2))[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
    assert (pred == np.array(test.targets)).mean() > 0.8


def test_standin_writer_refuses_to_overwrite_real_data(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "data_batch_1").write_bytes(b"real data")
    with pytest.raises(FileExistsError, match="refusing"):
        write_cifar_standin(tmp_path, "cifar10")
    assert (folder / "data_batch_1").read_bytes() == b"real data"


@pytest.mark.parametrize(
    ("cls", "shape", "num_classes"),
    [(CIFAR10DataModule, (3, 32, 32), 10), (CIFAR100DataModule, (3, 32, 32), 100)],
)
def test_cifar_on_standins(standin_root: Path, cls: type, shape: tuple[int, ...], num_classes: int) -> None:
    dm = cls(data_dir=str(standin_root), batch_size=16, eval_batch_size=20, val_size=0.2)
    with pytest.warns(StandInDataWarning, match="STAND-IN"):
        dm.prepare_data()
        dm.setup()
    assert (dm.num_classes, dm.input_shape) == (num_classes, shape)
    assert (len(dm.train_dataset), len(dm.val_dataset), len(dm.test_dataset)) == (160, 40, N_TEST)
    for loader, size in ((dm.train_dataloader(), 16), (dm.val_dataloader(), 20), (dm.test_dataloader(), 20)):
        x, y = _first_batch(loader)
        assert x.shape[0] == size
        _assert_images(x, y, shape, num_classes)
    # Augmentation (random crop with zero padding + flip) in train only.
    pool = dm.train_dataset.dataset
    i = dm.train_dataset.indices[0]
    untouched = torch.from_numpy(pool.data[i]).permute(2, 0, 1).float() / 255.0
    assert any(not torch.equal(dm.train_dataset[0][0], untouched) for _ in range(20))
    j = dm.val_dataset.indices[0]
    expected_val = torch.from_numpy(pool.data[j]).permute(2, 0, 1).float() / 255.0
    assert all(torch.equal(dm.val_dataset[0][0], expected_val) for _ in range(3))
    expected_test = torch.from_numpy(dm.test_dataset.dataset.data[0]).permute(2, 0, 1).float() / 255.0
    assert torch.equal(dm.test_dataset[0][0], expected_test)
    # augment=False: the training images are the stored ones.
    with pytest.warns(StandInDataWarning):
        plain = cls(data_dir=str(standin_root), augment=False, val_size=0.2)
        plain.setup("fit")
    k = plain.train_dataset.indices[0]
    assert torch.equal(plain.train_dataset[0][0], torch.from_numpy(pool.data[k]).permute(2, 0, 1).float() / 255.0)
    # The datasets survive pickling (spawned dataloader workers, DDP spawn).
    clone = pickle.loads(pickle.dumps(dm.val_dataset))
    assert torch.equal(clone[0][0], expected_val)


@pytest.mark.parametrize(("cls", "folder"), [(MNISTDataModule, "MNIST"), (FashionMNISTDataModule, "FashionMNIST")])
def test_mnist_family_on_standins(standin_root: Path, cls: type, folder: str) -> None:
    dm = cls(data_dir=str(standin_root), batch_size=25, augment=True)
    with pytest.warns(StandInDataWarning):
        dm.prepare_data()
        dm.setup()
    assert (len(dm.train_dataset), len(dm.val_dataset), len(dm.test_dataset)) == (180, 20, N_TEST)
    assert dm.dataset_dir == standin_root / folder / "raw"
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        x, y = _first_batch(loader)
        _assert_images(x, y, (1, 28, 28), 10)
    # No augmentation for MNIST-type data: a training item is the stored image / 255.
    pool = dm.train_dataset.dataset
    i = dm.train_dataset.indices[0]
    assert torch.equal(dm.train_dataset[0][0][0], pool.data[i].float() / 255.0)
    assert dm.train_dataset[0][1] == int(pool.targets[i])


def test_standin_cifar_in_a_fresh_process(standin_root: Path) -> None:
    """No in-process patching: a new interpreter reads the stand-ins through the datamodule."""
    code = (
        "import sys, warnings\n"
        "from datamodules import CIFAR100DataModule, StandInDataWarning\n"
        "dm = CIFAR100DataModule(data_dir=sys.argv[1], batch_size=8)\n"
        "with warnings.catch_warnings(record=True) as seen:\n"
        "    warnings.simplefilter('always')\n"
        "    dm.prepare_data(); dm.setup('fit')\n"
        "x, y = next(iter(dm.train_dataloader()))\n"
        "assert any(issubclass(w.category, StandInDataWarning) for w in seen)\n"
        "print('OK', tuple(x.shape), x.dtype, y.dtype)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run(
        [sys.executable, "-c", code, str(standin_root)],
        capture_output=True, text=True, timeout=120, env=env, cwd=str(REPO_ROOT),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "OK (8, 3, 32, 32) torch.float32 torch.int64" in result.stdout


# ---------------------------------------------------------------------------- integrity
def test_cifar_without_marker_is_md5_checked_as_real_data(tmp_path: Path) -> None:
    folder = write_cifar_standin(tmp_path, "cifar10", n_train=50, n_test=10)
    (folder / STANDIN_MARKER).unlink()
    dm = CIFAR10DataModule(data_dir=str(tmp_path))
    dm.prepare_data()  # the files are there
    with pytest.raises(DataNotFoundError) as info:
        dm.setup("fit")
    assert str(folder) in str(info.value) and "could not be read" in str(info.value)
    assert isinstance(info.value.__cause__, RuntimeError)  # torchvision's failed md5 check, chained


def test_tampered_standin_fails_its_own_checksums(tmp_path: Path) -> None:
    folder = write_cifar_standin(tmp_path, "cifar100", n_train=50, n_test=10)
    with open(folder / "test", "ab") as handle:
        handle.write(b"\0")
    dm = CIFAR100DataModule(data_dir=str(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StandInDataWarning)
        # torchvision checks the files of both splits whichever split is loaded.
        with pytest.raises(DataNotFoundError, match="CIFAR-100 .*could not be read") as info:
            dm.setup("fit")
    assert isinstance(info.value.__cause__, RuntimeError)


# ---------------------------------------------------------------------------- missing data
@pytest.mark.parametrize(
    ("make", "subdir", "hint"),
    [
        (lambda d: CIFAR10DataModule(data_dir=d), "cifar-10-batches-py", "--data.download true"),
        (lambda d: CIFAR100DataModule(data_dir=d), "cifar-100-python", "--data.download true"),
        (lambda d: MNISTDataModule(data_dir=d), "MNIST/raw", "--data.download true"),
        (lambda d: FashionMNISTDataModule(data_dir=d, local_source=None), "FashionMNIST/raw",
         "apt-get install dataset-fashion-mnist"),
    ],
)
def test_missing_data_raises_data_not_found(tmp_path: Path, make: Any, subdir: str, hint: str) -> None:
    dm = make(str(tmp_path))
    expected_dir = str(tmp_path / subdir)
    with pytest.raises(DataNotFoundError) as info:
        dm.prepare_data()
    assert isinstance(info.value, FileNotFoundError)
    assert expected_dir in str(info.value) and hint in str(info.value)
    assert info.value.directory == expected_dir
    with pytest.raises(DataNotFoundError, match="download=False"):
        dm.setup("fit")
    assert not any(tmp_path.iterdir())  # nothing was created


def test_data_not_found_error_pickles() -> None:
    err = DataNotFoundError("CIFAR-10", "/data/x", "download it", "gone")
    clone = pickle.loads(pickle.dumps(err))
    assert type(clone) is DataNotFoundError and str(clone) == str(err)
    assert str(err).startswith("CIFAR-10 data not found")


@pytest.fixture()
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every URL open fails like on a machine without a network; records the URLs."""
    attempts: list[str] = []

    def fail(request: Any, *args: Any, **kwargs: Any) -> Any:
        attempts.append(getattr(request, "full_url", str(request)))
        raise urllib.error.URLError("simulated: no network")

    monkeypatch.setattr(urllib.request, "urlopen", fail)
    return attempts


@pytest.mark.parametrize(
    ("cls", "subdir"),
    [(CIFAR10DataModule, "cifar-10-batches-py"), (CIFAR100DataModule, "cifar-100-python"),
     (MNISTDataModule, "MNIST/raw")],
)
def test_failed_download_raises_data_not_found(tmp_path: Path, no_network: list[str], cls: type, subdir: str) -> None:
    dm = cls(data_dir=str(tmp_path), download=True)
    with pytest.raises(DataNotFoundError) as info:
        dm.prepare_data()
    assert no_network, "torchvision did not even try to download"
    message = str(info.value)
    assert str(tmp_path / subdir) in message and "download failed" in message and "simulated: no network" in message
    assert info.value.__cause__ is not None  # torchvision's error is chained


def test_failed_download_fashion_mnist_without_local_source(tmp_path: Path, no_network: list[str]) -> None:
    dm = FashionMNISTDataModule(data_dir=str(tmp_path), download=True, local_source=str(tmp_path / "none"))
    with pytest.raises(DataNotFoundError) as info:
        dm.prepare_data()
    assert no_network
    assert "does not exist" in str(info.value)  # says why the local source was not used
    assert "apt-get install dataset-fashion-mnist" in str(info.value)


# ---------------------------------------------------------------------------- Fashion-MNIST local source
def test_local_source_with_wrong_content_is_rejected(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        with gzip.open(source / f"{name}.gz", "wb") as handle:
            handle.write(b"not fashion-mnist")
    dm = FashionMNISTDataModule(data_dir=str(tmp_path / "data"), local_source=str(source))
    with pytest.raises(DataNotFoundError) as info:
        dm.prepare_data()
    assert "does not hold the published data" in str(info.value) and str(source) in str(info.value)
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    assert not raw.exists() or not any(raw.iterdir())  # no partial or temporary files left


def test_fashion_mnist_from_debian_package(tmp_path: Path) -> None:
    # `bash scripts/dev.sh test` installs the Debian package when it is missing
    assert DEBIAN_FASHION_MNIST.is_dir(), f"{DEBIAN_FASHION_MNIST} absent: apt-get install -y dataset-fashion-mnist"
    dm = FashionMNISTDataModule(data_dir=str(tmp_path), batch_size=256)
    assert dm.local_source == str(DEBIAN_FASHION_MNIST)
    with warnings.catch_warnings():
        warnings.simplefilter("error", StandInDataWarning)  # real data: no stand-in warning
        dm.prepare_data()
        dm.setup()
    raw = tmp_path / "FashionMNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(
        ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", "train-images-idx3-ubyte", "train-labels-idx1-ubyte"]
    )
    pool, test = dm.train_dataset.dataset, dm.test_dataset.dataset
    assert len(pool) == 60_000 and len(test) == 10_000
    assert len(dm.train_dataset) == 54_000 and len(dm.val_dataset) == 6_000
    assert torch.bincount(pool.targets, minlength=10).tolist() == [6000] * 10
    assert torch.bincount(test.targets, minlength=10).tolist() == [1000] * 10
    x, y = _first_batch(dm.test_dataloader())
    _assert_images(x, y, (1, 28, 28), 10)
    # The first test image of Fashion-MNIST is an ankle boot (class 9).
    assert int(test.targets[0]) == 9
    # A second datamodule finds the files in place and does not need the local source.
    again = FashionMNISTDataModule(data_dir=str(tmp_path), local_source=None)
    again.prepare_data()
    again.setup("test")
    assert torch.equal(again.test_dataset.dataset.data, test.data)
