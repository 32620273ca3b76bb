"""The documentation points at things that exist: every relative link of README.md, CHANGELOG.md and docs/*.md
(and its #anchor), every config file it names, and the shape of every documented `python train.py`
command line (subcommand, `--config` files, top-level option groups of the CLI). Fast: text only.

The `python train.py` command lines that the code shows (docstrings of train.py, lightning_adv/,
callbacks/, datamodules/ and the messages of lightning_adv/cli_errors.py) are executed as written
through the real CLI, in-process, up to the trainer call; the quickstart is really trained."""
from __future__ import annotations

import ast
import itertools
import re
import shlex
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


TRAIN_COMMAND = re.compile(r"python train\.py[^\n#`]*")


def _commands_in(text: str) -> list[str]:
    """Every `python train.py ...` line of ``text``, continuation lines joined, trailing punctuation dropped."""
    joined = re.sub(r"\\\n\s*", " ", text)
    return [m.group(0).strip().rstrip(".,;:)") for m in TRAIN_COMMAND.finditer(joined)]


def _train_commands(text: str) -> list[str]:
    """Every `python train.py ...` line of the fenced blocks of a page."""
    return [cmd for block in FENCE.findall(text) for cmd in _commands_in(block)]


def _shape_errors(cmd: str, groups: set[str]) -> list[str]:
    """What is wrong with the shape of one command line (subcommand, option groups, --config files)."""
    words, bad = cmd.split(), []
    if len(words) < 3 or words[2] not in SUBCOMMANDS:
        return [f"{cmd!r}: subcommand must be one of {sorted(SUBCOMMANDS)}"]
    for i, w in enumerate(words):
        if w.startswith("--") and w[2:].split(".")[0].split("=")[0] not in groups:
            bad.append(f"{cmd!r}: unknown option group {w}")
        if w == "--config" and i + 1 < len(words) and "<" not in words[i + 1]:
            if not (REPO / words[i + 1]).is_file():
                bad.append(f"{cmd!r}: {words[i + 1]} does not exist")
    return bad


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_documented_train_commands_are_well_formed(page):
    groups = _cli_groups()
    bad = [err for cmd in _train_commands(page.read_text()) for err in _shape_errors(cmd, groups)]
    assert not bad, f"{page.name}: " + "; ".join(bad)


#: where the code shows command lines: docstrings and messages of these files
EXAMPLE_SOURCES = [REPO / "train.py", *sorted(f for d in ("lightning_adv", "callbacks", "datamodules")
                                              for f in (REPO / d).rglob("*.py"))]
#: the placeholders the messages use, and what the test puts there (anything else in <...> fails)
PLACEHOLDERS = {"<class_path>": "lightning_adv.modules.AdvTraining"}


def _strings(path: Path) -> list[str]:
    """Every string literal of a source file; an f-string whole, its fields as ``{}``."""
    tree = ast.parse(path.read_text())
    parts = {id(v) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for v in node.values}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in parts:
            out.append(node.value)
        elif isinstance(node, ast.JoinedStr):
            out.append("".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values))
    return out


def _code_examples() -> dict[str, str]:
    """``command line -> file`` for every `python train.py` line the code shows."""
    return {cmd: path.relative_to(REPO).as_posix() for path in EXAMPLE_SOURCES for text in _strings(path)
            for cmd in _commands_in(text)}


def test_code_examples_are_found_and_well_formed():
    examples, groups = _code_examples(), _cli_groups()
    shown = {f for f in examples.values()}
    assert {"train.py", "lightning_adv/cli.py", "lightning_adv/cli_errors.py", "callbacks/smoothing.py"} <= shown
    assert any("--model.objective.init_args.attack.steps 7" in c for c in examples)
    bad = [f"{where}: {err}" for cmd, where in examples.items() for err in _shape_errors(cmd, groups)]
    bad += [f"{where}: {cmd!r} has a field or placeholder that is not runnable as written"
            for cmd, where in examples.items() if "{" in cmd or re.search(r"<[^>]*>", _filled(cmd))]
    assert not bad, "; ".join(bad)


def _filled(cmd: str) -> str:
    for placeholder, value in PLACEHOLDERS.items():
        cmd = cmd.replace(placeholder, value)
    return cmd


def _execute(cmd: str) -> None:
    """``cmd`` through :func:`lightning_adv.cli.cli_main` as train.py runs it: parsed, checked (config files,
    class paths, ``--ckpt_path``), the model, data and trainer built; the trainer call itself is left out."""
    from lightning_adv import cli

    with pytest.MonkeyPatch.context() as mp:
        ran = []
        mp.setattr(cli.AdvLightningCLI, "_run_subcommand", lambda self, sub: ran.append(sub))
        try:
            cli.cli_main(shlex.split(_filled(cmd))[2:])
        except SystemExit as exc:
            assert exc.code in (0, None) and ".help" in cmd, f"{cmd!r} exited with {exc.code}"
            return
        assert ran == [shlex.split(cmd)[2]], f"{cmd!r} did not reach its subcommand"


def _fit_briefly(config: str) -> None:
    """A real run of ``config``: one training batch and one validation batch, writing its last.ckpt."""
    from lightning_adv.cli import cli_main

    cli_main(["fit", "--config", config, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1",
              "--trainer.limit_val_batches", "1", "--trainer.num_sanity_val_steps", "0",
              "--trainer.enable_progress_bar", "false"])


def test_code_examples_run_as_written(tmp_path, monkeypatch, capsys):
    """Every command line the code shows, executed as written from a fresh directory; the checkpoints
    that the `test --ckpt_path runs/<name>/version_0/checkpoints/last.ckpt` examples name are written
    first by real (one-batch) fits of the same configs, so the paths are checked as written too."""
    monkeypatch.chdir(tmp_path)  # runs/ lands here; --config configs/X.yaml finds the shipped configs
    examples = sorted(_code_examples())
    for cmd in examples:
        ckpt = re.search(r"--ckpt_path (runs/([\w-]+)/version_0/checkpoints/last\.ckpt)", cmd)
        if ckpt and not Path(ckpt.group(1)).is_file():
            _fit_briefly(f"configs/{ckpt.group(2)}.yaml")
            assert Path(ckpt.group(1)).is_file(), f"a fit of configs/{ckpt.group(2)}.yaml did not write {ckpt.group(1)}"
    failed = []
    for cmd in examples:
        try:
            _execute(cmd)
        except (SystemExit, AssertionError) as exc:
            failed.append(f"{cmd!r}: {exc} {capsys.readouterr().err.strip().splitlines()[-1:]}")
    assert not failed, "\n".join(failed)


def test_the_checks_see_the_pages():
    """The checks above parse something: links, configs and commands are found where they are known to be."""
    readme = (REPO / "README.md").read_text()
    assert "docs/index.md" in LINK.findall(_prose(readme))
    assert "bash scripts/dev.sh test" in readme  # .ci/run's command stays documented on the front page
    training = (REPO / "docs" / "training.md").read_text()
    assert any("configs/quickstart.yaml" in c for c in _train_commands(training))
    assert "the-attack-engine" in _anchors(REPO / "docs" / "evaluation.md")
    assert _expand("a_{x,y}[_z].yaml") == ["a_x.yaml", "a_x_z.yaml", "a_y.yaml", "a_y_z.yaml"]
