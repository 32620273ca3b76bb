"""Real MNIST for the certified table (issue 20): the data module keeps torchvision's download when online and
otherwise fails in one line naming where the files go; the tests' cache holds LeCun's files."""
from __future__ import annotations

import hashlib
import shutil
import urllib.error

import pytest
import torchvision

from helpers import MNIST_RAW
from lightning_adv.cli_errors import one_line
from lightning_adv.datamodules import DataNotFoundError, MNISTDataModule
from lightning_adv.datamodules.mnist import CONTENT_MD5


def test_cache_holds_lecuns_files(mnist_root):
    for name in MNIST_RAW:
        digest = hashlib.md5((mnist_root / "MNIST" / "raw" / name).read_bytes(), usedforsecurity=False).hexdigest()
        assert digest == CONTENT_MD5["MNIST"][name], name
    dm = MNISTDataModule(data_dir=str(mnist_root), val_size=5000)
    dm.prepare_data()
    dm.setup("fit")
    assert len(dm.train_dataset) == 55000 and len(dm.val_dataset) == 5000


@pytest.mark.parametrize("download", [False, True])
def test_missing_mnist_fails_in_one_line_naming_the_folder(tmp_path, monkeypatch, download):
    def offline(self, *args, **kwargs):  # what torchvision raises when no mirror answers
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://x/, got: "
                           f"{urllib.error.URLError('Name or service not known')}\n")

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", offline)
    dm = MNISTDataModule(data_dir=str(tmp_path), download=download)
    with pytest.raises(DataNotFoundError) as info:
        dm.prepare_data()
    line = one_line(info.value)
    assert "\n" not in line and str(tmp_path / "MNIST" / "raw") in line and "t10k-labels-idx1-ubyte" in line
    assert ("--data.download true" in line) is (not download)  # offline with download on: no advice to download
    assert ("download failed" in line) is download


def test_download_is_torchvisions_when_online(tmp_path, monkeypatch, mnist_root):
    calls = []

    def online(self):  # stands in for the network: the files arrive where torchvision puts them
        calls.append(self.raw_folder)
        shutil.copytree(mnist_root / "MNIST" / "raw", self.raw_folder, dirs_exist_ok=True)

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", online)
    dm = MNISTDataModule(data_dir=str(tmp_path), download=True)
    dm.prepare_data()
    dm.setup("test")
    assert calls == [str(tmp_path / "MNIST" / "raw")] and len(dm.test_dataset) == 10000
