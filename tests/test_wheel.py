"""`pip install .` / a built wheel works outside the checkout (issue 13, "A real package").

The wheel is built from a copy of the sources (the checkout gets no build/ or egg-info), installed
into a scratch venv that sees this environment's dependencies through a ``.pth`` line naming their
site-packages folder (a folder named in a .pth file is not scanned for further .pth files, so the
editable install of the checkout stays out), and run from a directory outside the checkout.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "lightning_adv", "datamodules", "callbacks", "configs")

CHECK_INSTALLED = r"""
import importlib.util, sys
from pathlib import Path
import lightning_adv
here = Path(lightning_adv.__file__).resolve().parent
assert str(here).startswith(sys.prefix), (here, sys.prefix)
for name in ("datamodules", "callbacks"):
    assert importlib.util.find_spec(name) is None, name  # no top-level names installed
import importlib, yaml
data = yaml.safe_load((here / "configs" / "aq_omniglot_minimal.yaml").read_text())["data"]
module, cls = data["class_path"].rsplit(".", 1)
cfg = dict(data["init_args"], data_dir="omniglot_here")
assert not Path(cfg["train_path"]).exists()  # relative to the checkout: found inside the installed package
dm = getattr(importlib.import_module(module), cls)(**cfg)
dm.prepare_data()
dm.setup("fit")
batch = next(iter(dm.train_dataloader()))
print("OMNIGLOT_OK", Path(dm.train_path).name, type(batch).__name__, flush=True)
"""


@pytest.fixture(scope="module")
def scratch_venv(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    src.mkdir()
    for name in SOURCES:
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(
            ROOT / name, src / name, **({"ignore": shutil.ignore_patterns("__pycache__")}
                                       if (ROOT / name).is_dir() else {}))
    dist = work / "dist"
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run(pip + ["wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(dist), str(src)],
                   check=True, cwd=work, capture_output=True, timeout=300)
    wheel = next(dist.glob("lightning_adv-*.whl"))
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    vpy = venv / "bin" / "python"
    purelib = subprocess.run([str(vpy), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    Path(purelib, "deps-of-the-test-env.pth").write_text("\n".join(sorted(deps)) + "\n")
    # this environment's pip, run by the scratch interpreter: the wheel goes into the scratch venv
    subprocess.run([str(vpy), "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
                    "--no-index", "--ignore-installed", str(wheel)], check=True, cwd=work, timeout=300)
    return venv


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONWARNINGS")}
    env["OMP_NUM_THREADS"] = "1"
    return env


def test_wheel_installs_package_data_and_no_top_level_names(scratch_venv, tmp_path):
    run = subprocess.run([str(scratch_venv / "bin" / "python"), "-c", CHECK_INSTALLED], cwd=tmp_path,
                         env=_env(), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    assert "OMNIGLOT_OK images_background_small1.zip" in run.stdout


def test_console_script_trains_a_shipped_config_outside_the_checkout(scratch_venv, tmp_path):
    cmd = [str(scratch_venv / "bin" / "lightning-adv"), "fit", "--config", "configs/quickstart.yaml",
           "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "2",
           "--trainer.log_every_n_steps", "1"]
    run = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-3000:]
    assert "using the shipped" in out and str(scratch_venv) in out  # the installed copy, not the checkout's
    ckpts = list(tmp_path.glob("runs/quickstart/version_0/checkpoints/last.ckpt"))
    assert ckpts, out[-2000:]
    import torch

    ckpt = torch.load(ckpts[0], map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 2 and ckpt["state_dict"]
    assert "lightning_adv.modules" in str(ckpt["hyper_parameters"].get("_class_path", ""))
