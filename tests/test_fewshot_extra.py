"""Without the few-shot extra (learn2learn, qpth) the library imports and trains the rest; every
few-shot class stops at its construction with one line naming the extra and the set-up command.
The installed-wheel version of this (a venv without learn2learn) is in tests/test_wheel.py."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from lightning_adv.cli_errors import one_line
from lightning_adv.extras import MissingExtraError

ROOT = Path(__file__).resolve().parents[1]

IMPORT_ALL_WITHOUT_THE_EXTRA = r"""
import sys, importlib, pkgutil
sys.modules["learn2learn"] = None  # an import of it raises ImportError
sys.modules["qpth"] = None
import lightning_adv, lightning_adv.cli, lightning_adv.datamodules, lightning_adv.callbacks
names = [m.name for pkg in (lightning_adv, lightning_adv.datamodules, lightning_adv.callbacks)
         for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + ".")]
for name in names:
    importlib.import_module(name)
print("IMPORTED", len(names))
"""


def test_every_module_imports_without_the_extra():
    run = subprocess.run([sys.executable, "-c", IMPORT_ALL_WITHOUT_THE_EXTRA], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert int(run.stdout.split("IMPORTED")[1]) > 50


def _builders():
    from lightning_adv.datamodules.fewshot import OmniglotFewShot
    from lightning_adv.meta import MAML, EpisodeDataset, HeadLearner, MetaOptNetHead, ProtoNetHead
    from lightning_adv.modules import AdversarialQuerying

    return {
        "ProtoNetHead": ProtoNetHead,
        "MetaOptNetHead": MetaOptNetHead,
        "MAML": MAML,
        "EpisodeDataset": lambda: EpisodeDataset(TensorDataset(torch.zeros(4, 1), torch.tensor([0, 0, 1, 1])),
                                                 {0: [0, 1], 1: [2, 3]}, 2, 1, 1, 2),
        "OmniglotFewShot": OmniglotFewShot,
        "AdversarialQuerying": AdversarialQuerying,
        "ProtoNetHead ": lambda: HeadLearner("protonet"),  # through the learner that names it in configs
    }


@pytest.mark.parametrize("missing", ["learn2learn", "qpth"])
def test_fewshot_classes_without_the_extra_stop_with_one_line(monkeypatch, missing):
    builders = _builders()
    monkeypatch.setitem(sys.modules, missing, None)
    stopped = []
    for name, build in builders.items():
        try:
            build()
        except MissingExtraError as err:
            line = one_line(err)
            assert line is not None and "\n" not in line
            assert line.startswith(f"error: {name.strip()} needs {missing}"), line
            assert "lightning-adv[fewshot]" in line and "bash scripts/dev.sh setup" in line, line
            stopped.append(name)
    # qpth is MetaOptNet's alone; learn2learn every few-shot class'
    assert stopped == (list(builders) if missing == "learn2learn" else ["MetaOptNetHead"])


def test_the_rest_builds_without_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "learn2learn", None)
    monkeypatch.setitem(sys.modules, "qpth", None)
    from lightning_adv.meta import HeadLearner
    from lightning_adv.modules import AdvTraining

    HeadLearner("r2d2")  # R2-D2's ridge head is written here
    AdvTraining(arch="small_cnn", num_classes=10, in_channels=1)
