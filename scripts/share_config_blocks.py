#!/usr/bin/env python
"""Rewrite configs so that they use the shared blocks of ``configs/_shared/`` instead of copies.

    python scripts/share_config_blocks.py configs/my_new_experiment.yaml   # one file
    python scripts/share_config_blocks.py                                  # every configs/*.yaml
    python scripts/share_config_blocks.py --check                          # list copies, change nothing

A block is replaced by the path of the ``_shared`` file that holds an equal value (compared as
parsed YAML), written relative to the config's folder, as jsonargparse reads it:

* ``trainer.callbacks[i]``         -> ``configs/_shared/callbacks/*.yaml`` (evaluation attacks,
  analysis callbacks);
* ``model.init_args.optim``        -> ``configs/_shared/optim/*.yaml`` (optimiser + LR schedule);
* ``data``                         -> ``configs/_shared/data/*.yaml`` (datamodule and its settings);
* ``trainer.logger`` equal to the CLI's default logger (``lightning_adv.cli.TRAINER_DEFAULTS``:
  TensorBoard under ``runs/``) but for its ``name`` -> ``{init_args: {name: ...}}``;
* ``trainer.accelerator: auto`` and ``trainer.devices: auto`` (Lightning's defaults) are dropped.

The effective configuration (``python train.py fit --config X --print_config``) does not change;
see docs/config-composition.md. Comments inside a replaced block are dropped (printed with --check).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Optional

import yaml

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SHARED = CONFIGS / "_shared"
KINDS = ("callbacks", "optim", "data")
DEFAULT_LOGGER = ("lightning.pytorch.loggers.TensorBoardLogger", "runs")


def shared_blocks(shared: Path = SHARED) -> dict[str, list[tuple[Path, Any]]]:
    """``{kind: [(file, value), ...]}`` for every ``_shared/<kind>/*.yaml``."""
    return {kind: [(p, yaml.safe_load(p.read_text())) for p in sorted((shared / kind).glob("*.yaml"))]
            for kind in KINDS}


def _get(node: Any, key: str) -> tuple[Optional[yaml.Node], Optional[yaml.Node]]:
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if k.value == key:
                return k, v
    return None, None


def _last_line(node: yaml.Node) -> int:
    """Last line holding text of ``node`` (a block collection's end mark lies after trailing comments)."""
    if isinstance(node, yaml.ScalarNode) or getattr(node, "flow_style", False):
        return node.end_mark.line - (1 if node.end_mark.column == 0 and node.end_mark.line > node.start_mark.line else 0)
    children = [c for kv in node.value for c in kv] if isinstance(node, yaml.MappingNode) else list(node.value)
    return max((_last_line(c) for c in children), default=node.start_mark.line)


def _value(node: yaml.Node) -> Any:
    return yaml.safe_load(yaml.serialize(node))


class _Edits:
    """Text replacements on one config, applied from the end so the marks stay valid."""

    def __init__(self, text: str) -> None:
        self.text, self.lines = text, text.splitlines(keepends=True)
        self.starts = [0]
        for line in self.lines:
            self.starts.append(self.starts[-1] + len(line))
        self.edits: list[tuple[int, int, str]] = []
        self.dropped: list[str] = []

    def replace(self, key: Optional[yaml.Node], node: yaml.Node, ref: str) -> None:
        if getattr(node, "flow_style", False) and node.start_mark.line == node.end_mark.line:
            self.edits.append((node.start_mark.index, node.end_mark.index, ref))
            return
        first = key.start_mark.line if key is not None else node.start_mark.line
        last = _last_line(node)
        line = self.lines[first]
        head = line[:key.end_mark.column] + ": " if key is not None else line[:node.start_mark.column]
        self.dropped += [ln.strip() for ln in self.lines[first + 1:last + 1] if "#" in ln]
        self.edits.append((self.starts[first], self.starts[last + 1], head + ref + "\n"))

    def drop_line(self, key: yaml.Node) -> None:
        n = key.start_mark.line
        self.edits.append((self.starts[n], self.starts[n + 1], ""))

    def apply(self) -> str:
        text = self.text
        for start, end, new in sorted(self.edits, reverse=True):
            text = text[:start] + new + text[end:]
        return text


def _ref(config_dir: Path, shared_file: Path) -> str:
    return Path(os.path.relpath(shared_file, config_dir)).as_posix()


def _match(blocks: list[tuple[Path, Any]], value: Any) -> Optional[Path]:
    return next((p for p, v in blocks if v == value), None)


def share(text: str, config_dir: Path, blocks: dict[str, list[tuple[Path, Any]]]) -> tuple[str, list[str]]:
    """``text`` of a config with its shared blocks replaced by references; also the dropped comments."""
    root = yaml.compose(text)
    if root is None:
        return text, []
    ed = _Edits(text)
    _, trainer = _get(root, "trainer")
    _, callbacks = _get(trainer, "callbacks")
    for item in callbacks.value if isinstance(callbacks, yaml.SequenceNode) else []:
        if not isinstance(item, yaml.ScalarNode):
            hit = _match(blocks["callbacks"], _value(item))
            if hit:
                ed.replace(None, item, _ref(config_dir, hit))
    _, model = _get(root, "model")
    k, optim = _get(_get(model, "init_args")[1], "optim")
    if optim is not None and not isinstance(optim, yaml.ScalarNode):
        hit = _match(blocks["optim"], _value(optim))
        if hit:
            ed.replace(k, optim, _ref(config_dir, hit))
    k, data = _get(root, "data")
    if data is not None and not isinstance(data, yaml.ScalarNode):
        hit = _match(blocks["data"], _value(data))
        if hit:
            ed.replace(k, data, _ref(config_dir, hit))
    k, logger = _get(trainer, "logger")
    value = _value(logger) if logger is not None else None
    if isinstance(value, dict) and value.get("class_path") == DEFAULT_LOGGER[0] \
            and set(value.get("init_args") or {}) == {"save_dir", "name"} and value["init_args"]["save_dir"] == DEFAULT_LOGGER[1]:
        ed.replace(k, logger, "{init_args: {name: %s}}" % value["init_args"]["name"])
    for key in ("accelerator", "devices"):
        k, v = _get(trainer, key)
        if v is not None and v.value == "auto":
            ed.drop_line(k)
    return ed.apply(), ed.dropped


def main(argv: list[str]) -> int:
    check = "--check" in argv
    paths = [Path(a) for a in argv if a != "--check"] or sorted(CONFIGS.glob("*.yaml"))
    blocks = shared_blocks()
    changed = 0
    for path in paths:
        text = path.read_text()
        new, dropped = share(text, path.resolve().parent, blocks)
        if new != text:
            changed += 1
            print(f"{path}: {'has copies of shared blocks' if check else 'rewritten'}"
                  + (f"; comments dropped: {dropped}" if dropped else ""))
            if not check:
                path.write_text(new)
    print(f"{changed} of {len(paths)} configs {'would change' if check else 'changed'}")
    return 1 if check and changed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
