"""Every version floor in pyproject.toml lies above the published advisories known to this project.

The table below is kept by hand (docs/installation.md, "How the floors are chosen"): one row per
advisory, with the versions it affects. A later edit that lowers a floor into an affected range, or
that admits a known-bad release (lightning 2.6.2 / 2.6.3), fails here. Scanners with the online
database (``pip-audit``) find advisories published after this table was written.
"""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]

#: (distribution, affected versions, advisory)
ADVISORIES: list[tuple[str, str, str]] = [
    ("torch", "<1.13.1", "CVE-2022-45907 torch.jit.annotations eval"),
    ("torch", "<2.2.0", "CVE-2024-31580 / CVE-2024-31583 (GHSA-pg7h-5qx3-wjr3)"),
    ("torch", "<2.2.2", "CVE-2024-5480 torch.distributed.rpc RCE"),
    ("torch", "<2.6.0", "CVE-2025-32434 torch.load(weights_only=True) RCE"),
    ("torch", "<=2.7.1", "CVE-2025-2953 mkldnn_max_pool2d DoS; CVE-2025-3730 ctc_loss DoS (GHSA-887c-mr87-cxwp)"),
    ("torch", "<2.9.1", "CVE-2025-2999 unpack_sequence memory corruption"),
    ("torch", "<2.10.0", "CVE-2025-3001 lstm_cell; CVE-2026-24747"),
    ("torch", "<=2.10.0", "PYSEC-2026-139"),
    ("torch", "<2.13.0", "CVE-2025-3000 torch.jit.script (GHSA-rrmf-rvhw-rf47)"),
    ("torchvision", "<0.29.1", "the release built for the torch floor (torchvision pins torch exactly)"),
    ("lightning", "<2.3.3", "CVE-2024-5452 deepdiff object-injection RCE"),
    ("lightning", "<=2.4.0", "VU#252619 deserialization in checkpoint / cloud_io / distributed loading"),
    ("lightning", "==2.6.2", "GHSA-w37p-236h-pfx3 / CVE-2026-44484 compromised release (credential stealer)"),
    ("lightning", "==2.6.3", "GHSA-w37p-236h-pfx3 / CVE-2026-44484 compromised release (credential stealer)"),
    ("lightning", "<2.6.6", "CVE-2026-58659 (GHSA-qqmf-gpg7-g8gw, PYSEC-2026-3624)"),
    ("scikit-learn", "<1.5.0", "CVE-2024-5206 TfidfVectorizer stop_words_ data leak"),
    ("numpy", "<1.22.0", "CVE-2021-41495 / CVE-2021-41496 / CVE-2021-34141"),
    ("pyyaml", "<5.4", "CVE-2020-14343 / CVE-2020-1747 full_load RCE"),
    ("jsonargparse", "<4.27.0", "below the first release with LightningCLI's current interface"),
    ("tensorboard", "<2.15.0", "werkzeug / protobuf advisories of its pinned ranges"),
    ("matplotlib", "<3.8.0", "Pillow / fontTools advisories of older pinned ranges"),
    ("scipy", "<1.10.0", "CVE-2023-25399 / CVE-2023-29824 refcount / use-after-free"),
    ("setuptools", "<65.5.1", "CVE-2022-40897 package_index ReDoS"),
    ("setuptools", "<70.0.0", "CVE-2024-6345 package_index RCE"),
    ("setuptools", "<78.1.1", "CVE-2025-47273 PackageIndex path traversal"),
    ("setuptools", "<80.10.2", "CVE-2026-23949 / CVE-2026-24049 (vendored wheel)"),
    ("wheel", "<0.38.1", "CVE-2022-40898 wheel-info ReDoS"),
    ("wheel", "<0.46.2", "CVE-2026-24049 unpack path traversal"),
    ("requests", "<2.33.0", "CVE-2024-35195, CVE-2024-47081, CVE-2026-25645"),
    ("tqdm", "<4.66.3", "CVE-2024-34062 CLI argument eval"),
    ("pytest", "<7.2.0", "CVE-2022-42969 (py.path ReDoS, via the `py` dependency)"),
    ("cython", "<3.0.0", "does not build learn2learn's extensions on Python 3.11+"),
]

#: distributions that must not come back (docs/installation.md: learn2learn is built without it)
BANNED = {"gym": "unmaintained, prints a banner on import, fails on NumPy 2"}


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _requirements() -> list[Requirement]:
    data = _pyproject()
    lines = list(data["project"]["dependencies"]) + list(data["build-system"]["requires"])
    for extra in data["project"].get("optional-dependencies", {}).values():
        lines += list(extra)
    return [Requirement(line) for line in lines]


def floor(spec: SpecifierSet) -> Version | None:
    """The lowest version ``spec`` admits through a ``>=`` or ``==`` clause (None: no floor)."""
    lows = [Version(s.version) for s in spec if s.operator in (">=", "==", "~=", "===")]
    return max(lows) if lows else None


def violations(req: Requirement) -> list[str]:
    """The advisories whose affected versions ``req`` admits, probed at its floor and at each
    release an advisory names with ``==``."""
    name = req.name.lower()
    low = floor(req.specifier)
    if low is None:
        return [f"{req}: no floor"]
    found = []
    for dist, affected, advisory in ADVISORIES:
        if dist != name:
            continue
        bad = SpecifierSet(affected)
        probes = [low] + [Version(s.version) for s in bad if s.operator == "=="]
        if any(v in bad and req.specifier.contains(v, prereleases=True) for v in probes):
            found.append(f"{req} admits {affected} ({advisory})")
    return found


def test_every_floor_is_above_the_known_advisories():
    reqs = _requirements()
    assert len(reqs) >= 15, [str(r) for r in reqs]
    problems = [v for r in reqs for v in violations(r)]
    assert not problems, "\n".join(problems)


def test_the_check_catches_a_lowered_floor():
    """The old floors of this project, each caught with its advisory (the check can fail)."""
    for old, advisory in [("torch>=2.1", "CVE-2025-32434"), ("lightning>=2.4,<3", "VU#252619"),
                          ("lightning>=2.2", "CVE-2024-5452"),
                          ("lightning>=2.6.1", "GHSA-w37p-236h-pfx3"), ("scikit-learn>=1.3", "CVE-2024-5206"),
                          ("setuptools>=65", "CVE-2025-47273"), ("torch>=2.12.0", "CVE-2025-3000"),
                          ("lightning", "no floor")]:
        found = violations(Requirement(old))
        assert any(advisory in f for f in found), (old, found)
    assert violations(Requirement("lightning>=2.6.6,<3")) == []


def test_no_banned_dependency_and_the_named_ones_are_covered():
    names = {r.name.lower() for r in _requirements()}
    assert not names & set(BANNED), names & set(BANNED)
    for must in ("torch", "torchvision", "lightning", "scikit-learn", "setuptools"):
        assert must in names
        assert any(d == must for d, _, _ in ADVISORIES), must


def test_dev_sh_installs_at_or_above_the_floors():
    """scripts/dev.sh's own pip installs (torch fallback, learn2learn's build and runtime needs)
    use the same floors, and install no gym."""
    text = (ROOT / "scripts" / "dev.sh").read_text()
    quoted = re.findall(r'"([A-Za-z][\w.-]*(?:\[[\w,]+\])?(?:[<>=!~]=?[^"\s]+)+)"', text)
    reqs = [Requirement(q) for q in quoted if not q.startswith(("learn2learn==$", "LIGHTNING"))]
    names = {r.name.lower() for r in reqs}
    assert {"torch", "torchvision", "setuptools", "cython", "requests", "tqdm"} <= names, names
    problems = [v for r in reqs for v in violations(r)]
    assert not problems, "\n".join(problems)
    assert "gym" not in names and not re.search(r'"gym(?:[<>=!~][^"]*)?"', text), "dev.sh still installs gym"
    pyproject = {r.name.lower(): floor(r.specifier) for r in _requirements()}
    for r in reqs:
        if r.name.lower() in pyproject and pyproject[r.name.lower()] is not None:
            assert floor(r.specifier) >= pyproject[r.name.lower()], (str(r), pyproject[r.name.lower()])


@pytest.mark.parametrize("dist", ["torch", "torchvision", "lightning", "torchmetrics", "jsonargparse"])
def test_floor_is_a_release_the_suite_runs_with(dist):
    """The floor of each core dependency is not above the installed (tested) release, so the
    suite really runs at or above every floor (and pip check would pass here)."""
    from importlib.metadata import version

    req = next(r for r in _requirements() if r.name.lower() == dist)
    installed = Version(version(dist).split("+")[0])
    assert req.specifier.contains(installed), (str(req), installed)
