"""`pip install .` / a built wheel works outside the checkout, without the few-shot extra.

The wheel is built once from a copy of the sources (the checkout gets no build/ or egg-info); the
build's output must carry no setuptools warning (deprecations become errors later). It is installed
into one scratch venv that sees this environment's dependencies through a ``.pth`` line naming a
folder of links to them, without learn2learn and qpth (the ``[fewshot]`` extra) and without the
checkout's own install, and run from a directory outside the checkout. The few-shot check adds the
extra's two packages through ``PYTHONPATH``.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "lightning_adv", "datamodules", "callbacks", "configs")
#: the few-shot extra: left out of the scratch venv
FEWSHOT = ("learn2learn", "qpth")
#: what a setuptools warning looks like in the build log (deprecations, "Package would be ignored")
SETUPTOOLS_WARNING = re.compile(r"SetuptoolsDeprecationWarning|BuildBackendWarning|would be ignored|is deprecated")

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


def _link_dependencies(folder: Path) -> None:
    """Links to this environment's installed packages, less the few-shot extra and lightning-adv itself."""
    folder.mkdir()
    skip = re.compile(rf"^(({'|'.join(FEWSHOT)}|lightning_adv)\b|__editable__)|\.pth$", re.IGNORECASE)
    for entry in sys.path:
        if not entry.endswith("site-packages") or not Path(entry).is_dir():
            continue
        for item in Path(entry).iterdir():
            if not skip.search(item.name) and not (folder / item.name).exists():
                (folder / item.name).symlink_to(item)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, str]:
    """The wheel and its build's log."""
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    src.mkdir()
    for name in SOURCES:
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(
            ROOT / name, src / name, **({"ignore": shutil.ignore_patterns("__pycache__")}
                                       if (ROOT / name).is_dir() else {}))
    dist = work / "dist"
    pip = [sys.executable, "-m", "pip", "-v", "--disable-pip-version-check"]
    build = subprocess.run(pip + ["wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(dist), str(src)],
                           cwd=work, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, (build.stdout + build.stderr)[-3000:]
    return next(dist.glob("lightning_adv-*.whl")), build.stdout + build.stderr


@pytest.fixture(scope="module")
def scratch_venv(built) -> Path:
    wheel = built[0]
    work = wheel.parent.parent
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    vpy = venv / "bin" / "python"
    purelib = subprocess.run([str(vpy), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    _link_dependencies(work / "deps")
    # a folder named in a .pth file is not scanned for further .pth files: no editable install comes in
    Path(purelib, "deps-of-the-test-env.pth").write_text(f"{work / 'deps'}\n")
    # this environment's pip, run by the scratch interpreter: the wheel goes into the scratch venv
    subprocess.run([str(vpy), "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
                    "--no-index", "--ignore-installed", str(wheel)], check=True, cwd=work, timeout=300)
    return venv


def test_the_build_prints_no_setuptools_warning(built):
    assert not [line for line in built[1].splitlines() if SETUPTOOLS_WARNING.search(line)], built[1][-4000:]


def test_the_wheel_carries_every_config_and_the_omniglot_assets(built):
    names = set(zipfile.ZipFile(built[0]).namelist())
    configs = {f"lightning_adv/configs/{p.relative_to(ROOT / 'configs').as_posix()}"
               for p in (ROOT / "configs").rglob("*") if p.is_file()}
    assert any("/_shared/" in c for c in configs) and configs <= names, sorted(configs - names)
    assets = {f"lightning_adv/datamodules/assets/omniglot/{p.name}"
              for p in (ROOT / "datamodules" / "assets" / "omniglot").iterdir()}
    assert {a for a in assets if a.endswith(".zip")} and assets <= names, sorted(assets - names)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONWARNINGS")}
    env["OMP_NUM_THREADS"] = "1"
    return {**env, **extra}


def _fewshot_path(folder: Path) -> str:
    """A folder with links to the few-shot extra's packages of this environment, for PYTHONPATH."""
    folder.mkdir()
    for name in FEWSHOT:
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.origin, f"the test environment lacks {name} (bash scripts/dev.sh setup)"
        (folder / name).symlink_to(Path(spec.origin).parent)
    return str(folder)


def test_wheel_installs_package_data_and_no_top_level_names(scratch_venv, tmp_path):
    fewshot = _fewshot_path(tmp_path / "fewshot")
    run = subprocess.run([str(scratch_venv / "bin" / "python"), "-c", CHECK_INSTALLED], cwd=tmp_path,
                         env=_env(PYTHONPATH=fewshot), capture_output=True, text=True, timeout=300)
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


def test_a_fewshot_config_without_the_extra_stops_with_one_line_naming_it(scratch_venv, tmp_path):
    cmd = [str(scratch_venv / "bin" / "lightning-adv"), "fit", "--config", "configs/aq_omniglot_minimal.yaml",
           "--trainer.fast_dev_run", "1"]
    run = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    last = run.stderr.strip().splitlines()[-1]
    assert run.returncode == 2, (run.stdout + run.stderr)[-3000:]
    assert last.startswith("error: ") and "needs learn2learn" in last, last
    assert "lightning-adv[fewshot]" in last and "bash scripts/dev.sh setup" in last, last
    assert "Traceback" not in run.stderr
