"""One rule for booleans in every argument check of the library (lightning_adv/validation.py): a bool is
never a number. ``steps: true`` in a config is refused by name, with the value and the fix, in attacks,
objectives, modules, data modules and callbacks; it was read as 1 (``int(True) == 1``) by the order-book
attacks, AutoAttack, GANTraining's lr, Classifier's noise_sigma and the LOBSTER data module."""
from __future__ import annotations

import pytest

from lightning_adv.attacks import PGD, AutoAttack
from lightning_adv.callbacks import EMA
from lightning_adv.datamodules import DigitsDataModule, LOBSTERDataModule
from lightning_adv.modules import Classifier, GANTraining
from lightning_adv.objectives import AWP, PGDAT, TRADES
from lightning_adv.orderbook.attacks import CapitalBoundedAttack
from lightning_adv.validation import ArgumentTypeError, check_int, check_real

CASES = [
    # attacks
    (lambda v: PGD(steps=v), "steps"),
    (lambda v: CapitalBoundedAttack(steps=v), "steps"),
    (lambda v: AutoAttack(eps=0.03, square_queries=v), "square_queries"),
    # objectives
    (lambda v: PGDAT(attack={"eps": 0.03, "steps": v}), "steps"),
    (lambda v: TRADES(beta=v), "beta"),
    (lambda v: AWP(warmup_epochs=v), "warmup_epochs"),
    # modules
    (lambda v: Classifier(arch="small_cnn", num_classes=10, in_channels=1, noise_sigma=v), "noise_sigma"),
    (lambda v: GANTraining(lr=v), "lr"),
    # data modules
    (lambda v: LOBSTERDataModule(levels=v), "levels"),
    (lambda v: LOBSTERDataModule(min_snippets=v), "min_snippets"),
    (lambda v: DigitsDataModule(batch_size=v), "batch_size"),
    # callbacks
    (lambda v: EMA(update_every_n_steps=v), "EMA.update_every_n_steps"),
]


@pytest.mark.parametrize(("build", "name"), CASES, ids=[f"{i}-{c[1]}" for i, c in enumerate(CASES)])
def test_a_bool_is_never_a_number(build, name):
    with pytest.raises(ArgumentTypeError) as info:
        build(True)
    message = str(info.value)
    assert f"{name}=True (a bool, not a number)" in message and "write a number such as" in message
    assert "\n" not in message


def test_the_rule_and_the_shape():
    with pytest.raises(ValueError, match=r"^steps must be an integer >= 1, got steps=False \(a bool, not a number\); "
                                         r"write a number such as steps=1; PGD-10: 10$"):
        check_int("steps", False, 1, "PGD-10: 10")
    with pytest.raises(ValueError, match=r"^eps must be a number, got eps=True \(a bool"):
        check_real("eps", True)
    assert check_int("steps", 10.0, 1, whole_floats=True) == 10 and check_real("beta", 6) == 6.0
    with pytest.raises(ValueError, match=r"^drop must be a finite number >= 0 and < 1, got drop=1.0$"):
        check_real("drop", 1.0, minimum=0.0, maximum=1.0, below_max=True)


def test_nothing_below_the_command_line_imports_it():
    """Library code raises the errors of lightning_adv/errors.py; only the command line's own modules
    (cli.py, cli_errors.py, cli_logging.py, cli_paths.py) import cli or cli_errors (callbacks/resume.py did)."""
    import ast

    from helpers import REPO

    cli_modules = {"cli", "cli_errors", "cli_logging", "cli_paths"}
    bad = []
    for folder in ("lightning_adv", "callbacks", "datamodules"):
        for path in (REPO / folder).rglob("*.py"):
            if folder == "lightning_adv" and path.parent.name == "lightning_adv" and path.stem in cli_modules:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] + [f"{node.module or ''}.{a.name}" for a in node.names]
                         if isinstance(node, ast.ImportFrom) else [])
                if any(set(n.strip(".").split(".")) & {"cli", "cli_errors"} for n in names):
                    bad.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not bad, f"below the command line, imports of cli/cli_errors: {bad}"
