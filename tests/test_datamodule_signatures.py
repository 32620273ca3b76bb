"""The command line reads the datamodules' parameters through their inheritance.

A data module declares only what it adds or whose default it changes and passes the rest on with
``**kwargs``; jsonargparse resolves them into the base class' parameters. Every parameter of the
base class must still be offered, with its default, its type and its docstring, and given values
must reach the base class.
"""
from __future__ import annotations

import inspect
from typing import Any

import pytest
from jsonargparse import ArgumentParser

from lightning_adv.datamodules import (CIFAR10DataModule, CIFAR100DataModule, DigitsDataModule, FashionMNISTDataModule,
                                       ImageClassificationDataModule, MNISTDataModule)
from lightning_adv.datamodules.fewshot import ClassFolderFewShot, FewShotDataModule, OmniglotFewShot


def _defaults(cls: type) -> dict[str, Any]:
    return {name: p.default for name, p in inspect.signature(cls.__init__).parameters.items()
            if name != "self" and p.kind is not inspect.Parameter.VAR_KEYWORD}


def _offered(cls: type) -> tuple[ArgumentParser, dict[str, Any], dict[str, str]]:
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(cls, "data")
    helps = {a.dest.removeprefix("data."): a.help for a in parser._actions if a.dest.startswith("data.")}
    return parser, parser.get_defaults().data.as_dict(), helps


@pytest.mark.parametrize("cls, own", [
    (CIFAR10DataModule, {}),
    (CIFAR100DataModule, {}),
    (MNISTDataModule, {"local_source": None}),
    (FashionMNISTDataModule, {"local_source": "/usr/share/datasets/fashion-mnist"}),
    (DigitsDataModule, {"augment": False, "test_size": 0.25}),
])
def test_image_datamodules_offer_every_base_parameter(cls: type, own: dict[str, Any]) -> None:
    _, defaults, helps = _offered(cls)
    assert defaults == {**_defaults(ImageClassificationDataModule), **own}
    inherited = set(_defaults(ImageClassificationDataModule)) - set(own)
    assert all(helps[name] for name in inherited), {name: helps[name] for name in inherited}  # docstrings kept


def test_fewshot_datamodules_offer_every_base_parameter_with_their_own_defaults() -> None:
    _, omniglot, helps = _offered(OmniglotFewShot)
    changed = {"shots": 5, "queries": 15, "tasks_per_batch": 32, "train_episodes": 32000, "val_shots": 5,
               "val_episodes": 200, "augment": False, "val_classes": 100}
    assert omniglot == {**_defaults(FewShotDataModule), **changed}
    assert all(helps[name] for name in _defaults(FewShotDataModule)), helps
    _, folders, helps = _offered(ClassFolderFewShot)
    assert {"train_path", "test_path"} <= set(helps)  # required, no default
    folders = {k: v for k, v in folders.items() if k not in ("train_path", "test_path")}
    base = {k: v for k, v in _defaults(FewShotDataModule).items() if k != "download"}  # always local files
    assert folders == {**base, "data_dir": "data/class_folder", "in_channels": 1, "shots": 5, "queries": 15,
                       "train_episodes": 800, "val_shots": 5, "val_episodes": 100, "test_episodes": 400,
                       "augment": False, "val_classes": 16}


def test_values_given_on_the_command_line_reach_the_base_class() -> None:
    parser, _, _ = _offered(FashionMNISTDataModule)
    cfg = parser.parse_args(["--data.batch_size", "7", "--data.val_size", "0.2", "--data.local_source", "/x",
                             "--data.augment", "crops"])
    dm = parser.instantiate(cfg).data
    assert (dm.batch_size, dm.val_size, dm.local_source, dm.augmentation) == (7, 0.2, "/x", "crops")
    parser, _, _ = _offered(DigitsDataModule)
    dm = parser.instantiate(parser.parse_args(["--data.seed", "3", "--data.test_size", "0.5"])).data
    assert (dm.seed, dm.test_size, dm.augmentation) == (3, 0.5, "none")
