"""Data is data: doctored pickles cannot run code, stand-ins are used only on purpose, interrupted
extractions are cleaned up by the next run."""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from lightning_adv.datamodules import CIFAR10DataModule, write_cifar_standin
from lightning_adv.datamodules.cleanup import remove_stale
from lightning_adv.datamodules.safe_pickle import load_data_pickle
from lightning_adv.datamodules.standins import STANDIN_MARKER, _md5


class _Payload:
    """Unpickling this runs ``open(path, 'w')`` (a stand-in for arbitrary code)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_doctored_cifar_batch_with_matching_manifest_runs_no_code(tmp_path):
    write_cifar_standin(tmp_path, "cifar10", n_train=20, n_test=10)
    folder = tmp_path / "cifar-10-batches-py"
    pwned = tmp_path / "PWNED"
    batch = folder / "data_batch_1"
    with open(batch, "wb") as f:
        pickle.dump({"data": np.zeros((4, 3072), np.uint8), "labels": [0, 1, 2, 3], "x": _Payload(pwned)}, f,
                    protocol=2)
    manifest = json.loads((folder / STANDIN_MARKER).read_text())
    manifest["md5"]["data_batch_1"] = _md5(batch)  # the adversary edits the manifest to match
    (folder / STANDIN_MARKER).write_text(json.dumps(manifest))
    dm = CIFAR10DataModule(data_dir=str(tmp_path), val_size=2, batch_size=4)
    with pytest.raises(Exception, match="refused") as info:
        dm.setup("fit")
    assert isinstance(info.value.__cause__, pickle.UnpicklingError) and "open" in str(info.value.__cause__)
    assert not pwned.exists()


def test_real_format_batches_load_through_the_data_unpickler(tmp_path):
    write_cifar_standin(tmp_path, "cifar100", n_train=20, n_test=10)
    entry = load_data_pickle(tmp_path / "cifar-100-python" / "train")
    assert entry["data"].shape == (20, 3072) and len(entry["fine_labels"]) == 20
    dm = CIFAR10DataModule(data_dir=str(tmp_path / "c10"), val_size=2, batch_size=4)
    write_cifar_standin(tmp_path / "c10", "cifar10", n_train=20, n_test=10)
    dm.setup("fit")
    x, y = dm.train_dataset[0]
    assert x.shape == (3, 32, 32) and 0 <= float(x.min()) and float(x.max()) <= 1


def test_standin_refused_unless_asked_for(tmp_path, monkeypatch):
    write_cifar_standin(tmp_path, "cifar10", n_train=20, n_test=10)
    monkeypatch.delenv("LIGHTNING_ADV_ALLOW_STANDIN")
    dm = CIFAR10DataModule(data_dir=str(tmp_path), val_size=2, batch_size=4)
    with pytest.raises(ValueError, match="STAND-IN.*LIGHTNING_ADV_ALLOW_STANDIN=1"):
        dm.setup("fit")


def test_interrupted_extraction_is_cleaned_and_recovered(tmp_path):
    from lightning_adv.datamodules.fewshot import ClassFolderFewShot

    archive = tmp_path / "tree.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for c in range(5):
            for i in range(4):
                from PIL import Image
                import io

                buf = io.BytesIO()
                Image.fromarray(np.full((8, 8), 40 * c + i, np.uint8)).save(buf, format="PNG")
                z.writestr(f"alpha/char{c}/{i}.png", buf.getvalue())
    root = tmp_path / "data"
    # a run killed mid-extraction: its partial folder (pid of a finished process) and a half target
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = root / f"tree.partial{int(dead.stdout)}"
    (stale / "alpha").mkdir(parents=True)
    (root / "tree" / "alpha").mkdir(parents=True)  # no .extracted marker: incomplete
    dm = ClassFolderFewShot(train_path=str(archive), test_path=str(archive), data_dir=str(root), ways=2, shots=1,
                            queries=1, image_size=8, val_classes=2, train_episodes=2, val_episodes=1, val_shots=1,
                            test_shots=1, test_queries=1, test_episodes=1)
    dm.setup("fit")
    assert not stale.exists() and (root / "tree" / ".extracted").exists()
    assert sorted(p.name for p in root.iterdir()) == ["tree"]
    live = root / f"tree.partial{os.getpid()}"  # a live process's partial folder is left alone
    live.mkdir()
    assert remove_stale(root, r"tree\.partial(?P<pid>\d+)") == [] and live.exists()
