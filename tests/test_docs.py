"""The documentation points at things that exist: every relative link of README.md, CHANGELOG.md and docs/*.md
(and its #anchor), every config file it names, and the shape of every documented `python train.py`
command line (subcommand, `--config` files, top-level option groups of the CLI). Fast: text only."""
from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

from helpers import REPO

PAGES = [REPO / "README.md", REPO / "CHANGELOG.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```.*?^```", re.M | re.S)
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
CONFIG_REF = re.compile(r"`(?:configs/)?([A-Za-z0-9_{},*\[\]-]+\.yaml)`|configs/([A-Za-z0-9_-]+\.yaml)")
SUBCOMMANDS = {"fit", "validate", "test", "predict"}


def _prose(text: str) -> str:
    """The text outside fenced code blocks (headings and links inside code are not markdown)."""
    return FENCE.sub("", text)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: link text only, lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in _prose(page.read_text()).splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*$", line)
        if m:
            base = _slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


def _expand(pattern: str) -> list[str]:
    """`a_{x,y}[_z].yaml` -> a_x.yaml, a_x_z.yaml, a_y.yaml, a_y_z.yaml (brace and optional parts)."""
    parts = re.split(r"(\{[^}]*\}|\[[^\]]*\])", pattern)
    choices = [p[1:-1].split(",") if p.startswith("{") else ["", p[1:-1]] if p.startswith("[") else [p]
               for p in parts]
    return ["".join(c) for c in itertools.product(*choices)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_relative_links_and_anchors_exist(page):
    bad = []
    for target in LINK.findall(_prose(page.read_text())):
        if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            bad.append(f"{target}: {dest.relative_to(REPO) if dest.is_relative_to(REPO) else dest} does not exist")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            bad.append(f"{target}: no heading with anchor #{anchor} in {dest.name}")
    assert not bad, f"{page.name}: " + "; ".join(bad)


RUN_FILES = {"config.yaml", "config_test.yaml", "config_validate.yaml", "hparams.yaml"}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_named_config_files_exist(page):
    names = {REPO / "configs" / p.name for p in (REPO / "configs").glob("*.yaml")}
    bad = []
    for quoted, bare in CONFIG_REF.findall(page.read_text()):
        ref = quoted or bare
        # files a run writes (its saved config, Lightning's hparams); a suffix like `_eps03.yaml`
        if ref in RUN_FILES or ref.startswith("_"):
            continue
        for name in _expand(ref):
            hits = list((REPO / "configs").glob(name)) if "*" in name else [REPO / "configs" / name]
            if not hits or not all(h in names for h in hits):
                bad.append(name)
    assert not bad, f"{page.name} names configs that do not exist: {sorted(set(bad))}"


def _cli_groups() -> set[str]:
    """Top-level option groups of train.py: LightningCLI's own and those lightning_adv/cli.py adds."""
    added = re.findall(r"add_lightning_class_args\([^,]+,\s*[\"'](\w+)[\"']", (REPO / "lightning_adv" / "cli.py").read_text())
    return {"config", "ckpt_path", "print_config", "model", "data", "trainer", "seed_everything", "optimizer",
            "lr_scheduler", *added}


def _train_commands(text: str) -> list[str]:
    """Every `python train.py ...` line of the fenced blocks, continuation lines joined."""
    cmds = []
    for block in FENCE.findall(text):
        joined = re.sub(r"\\\n\s*", " ", block)
        cmds += [m.group(0) for m in re.finditer(r"python train\.py[^\n#]*", joined)]
    return cmds


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_documented_train_commands_are_well_formed(page):
    groups, bad = _cli_groups(), []
    for cmd in _train_commands(page.read_text()):
        words = cmd.split()
        if len(words) < 3 or words[2] not in SUBCOMMANDS:
            bad.append(f"{cmd!r}: subcommand must be one of {sorted(SUBCOMMANDS)}")
            continue
        for i, w in enumerate(words):
            if w.startswith("--") and w[2:].split(".")[0].split("=")[0] not in groups:
                bad.append(f"{cmd!r}: unknown option group {w}")
            if w == "--config" and i + 1 < len(words) and "<" not in words[i + 1]:
                if not (REPO / words[i + 1]).is_file():
                    bad.append(f"{cmd!r}: {words[i + 1]} does not exist")
    assert not bad, f"{page.name}: " + "; ".join(bad)


def test_the_checks_see_the_pages():
    """The checks above parse something: links, configs and commands are found where they are known to be."""
    readme = (REPO / "README.md").read_text()
    assert "docs/index.md" in LINK.findall(_prose(readme))
    assert "bash scripts/dev.sh test" in readme  # .ci/run's command stays documented on the front page
    training = (REPO / "docs" / "training.md").read_text()
    assert any("configs/quickstart.yaml" in c for c in _train_commands(training))
    assert "the-attack-engine" in _anchors(REPO / "docs" / "evaluation.md")
    assert _expand("a_{x,y}[_z].yaml") == ["a_x.yaml", "a_x_z.yaml", "a_y.yaml", "a_y_z.yaml"]
