"""Tutorial: evaluate your own model ("bring your own model").

A plain ``torch.nn.Module`` trained outside Lightning (here: a small MLP adversarially trained on
scikit-learn's digits in an ordinary PyTorch loop, or your own weights with ``--weights``) is
evaluated by the project's one evaluator, ``lightning_adv.attacks.AttackSuite``: FGSM, PGD-20 and
a subset of AutoAttack (APGD-CE, APGD-T), the per-example worst case over them, sanity flags, and
the report as a table (and as JSON/CSV with ``--out DIR``).

    python tutorials/evaluate_your_model.py                 # about a minute on one CPU thread
    python tutorials/evaluate_your_model.py --tiny          # seconds (the test's settings)
    python tutorials/evaluate_your_model.py --weights my_mlp.pt --out reports/

The model only has to map images in [0, 1] to logits; normalisation belongs inside it.
"""
from __future__ import annotations

import argparse
import os

import torch
from sklearn.datasets import load_digits
from torch import nn

from lightning_adv.attacks import FGSM, PGD, AttackSuite, AutoAttack

EPS = 0.15  # Linf radius on digits' 17 grey levels (the quickstart's eps)


def digits_tensors(seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Digits as (N, 1, 8, 8) images in [0, 1], split 80/20 with a fixed permutation."""
    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(data.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    x, y = x[perm], y[perm]
    n_train = int(0.8 * len(y))
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def make_model() -> nn.Module:
    """Any nn.Module works; this one is small so the tutorial runs on a CPU."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10))


def train_plain(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, adversarial: bool) -> None:
    """An ordinary PyTorch loop; with ``adversarial`` each batch is replaced by its PGD-5 points
    (the project's attack objects work on any callable model, inside or outside Lightning)."""
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    attack = PGD(eps=EPS, steps=5, step_size=EPS / 2.5)
    for _ in range(epochs):
        for idx in torch.randperm(len(y)).split(64):
            xb, yb = x[idx], y[idx]
            if adversarial:
                xb = attack(model, xb, yb)  # restores the model's mode and leaves .grad alone
            model.train()
            loss = nn.functional.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", default=os.environ.get("LIGHTNING_ADV_TUTORIAL_TINY") == "1",
                   help="tiny settings (few epochs, 120 test images); also LIGHTNING_ADV_TUTORIAL_TINY=1")
    p.add_argument("--weights", help="a state dict of make_model() to load instead of training")
    p.add_argument("--natural", action="store_true", help="train without attacks (watch robust accuracy collapse)")
    p.add_argument("--out", help="write attack_suite.json / .csv into this folder")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(1)

    x_train, y_train, x_test, y_test = digits_tensors()
    model = make_model()
    if args.weights:
        model.load_state_dict(torch.load(args.weights, weights_only=True))  # data only, never pickled code
        model.eval()
    else:
        train_plain(model, x_train, y_train, epochs=4 if args.tiny else 15, adversarial=not args.natural)
    if args.tiny:
        x_test, y_test = x_test[:120], y_test[:120]

    attacks = [
        FGSM(eps=EPS, name="fgsm"),
        PGD(eps=EPS, steps=20, step_size=EPS / 8, name="pgd20"),
        AutoAttack(eps=EPS, components=["apgd-ce", "apgd-t"], name="autoattack_apgd"),  # a subset of the standard version
    ]
    suite = AttackSuite(attacks, cascade=True)  # AutoAttack's way: later attacks on still-robust points
    report, _records = suite.evaluate(model, x_test, y_test, batch_size=256)
    print(report.table())
    if args.out:
        print("wrote", ", ".join(report.write(args.out)))
    print(f"RESULT clean_acc={report.clean_acc:.4f} robust_acc={report.worst_case_acc:.4f} n={report.n}")


if __name__ == "__main__":
    main()
