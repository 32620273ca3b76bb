#!/usr/bin/env python
"""Table 3.3: universal targeted perturbations trained on surrogate models, transferred to victims.

From checkpoints of ``PricePrediction`` runs (loaded with ``weights_only=True``) and the data
config they were trained with:

    python scripts/lob_universal.py --config configs/lob_f_mlp.yaml \\
        --ckpt linear=runs/lob_f_linear/version_0/checkpoints/last.ckpt \\
        --ckpt mlp=runs/lob_f_mlp/version_0/checkpoints/last.ckpt \\
        --ckpt lstm=runs/lob_f_lstm/version_0/checkpoints/last.ckpt \\
        --surrogates linear mlp --target 0 --gamma 0.05

Offline demo on toy snippets (three small models trained here, ~1 minute on a CPU):

    python scripts/lob_universal.py --toy
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lightning_adv.modules import PricePrediction  # noqa: E402
from lightning_adv.orderbook import create_valuation_model, toy_snippets, transfer_table  # noqa: E402


def load_module(path: str) -> torch.nn.Module:
    ck = torch.load(path, map_location="cpu", weights_only=True)
    hp = {k: v for k, v in ck["hyper_parameters"].items() if not k.startswith("_")}
    module = PricePrediction(**hp)
    module.load_state_dict(ck["state_dict"])
    return module.eval()


def datamodule_from_config(path: str):
    data = yaml.safe_load(Path(path).read_text())["data"]
    mod, cls = data["class_path"].rsplit(".", 1)
    dm = getattr(importlib.import_module(mod), cls)(**data.get("init_args", {}))
    dm.prepare_data()
    dm.setup("fit")
    return dm


def toy_models(steps: int, levels: int) -> tuple[dict, list, list]:
    x, y = toy_snippets(1200, steps=steps, levels=levels, seed=1)
    models = {}
    for arch, kw in (("linear", {}), ("mlp", {"width": 64, "depth": 4}), ("lstm", {"hidden": 16, "layers": 3})):
        torch.manual_seed(0)
        m = create_valuation_model(arch, steps=steps, **kw)
        opt = torch.optim.Adam(m.parameters(), 1e-2)
        for _ in range(15):
            for i in range(0, 1200, 100):
                loss = torch.nn.functional.cross_entropy(m(x[i:i + 100]), y[i:i + 100])
                opt.zero_grad()
                loss.backward()
                opt.step()
        models[arch] = m.eval()
    xt, yt = toy_snippets(400, steps=steps, levels=levels, seed=2)
    return (models, [(x[i:i + 100], y[i:i + 100]) for i in range(0, 1200, 100)],
            [(xt[i:i + 100], yt[i:i + 100]) for i in range(0, 400, 100)])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="the training config (its data section is used)")
    p.add_argument("--ckpt", action="append", default=[], help="name=path of a PricePrediction checkpoint")
    p.add_argument("--surrogates", nargs="*", help="names of the surrogate models (default: all)")
    p.add_argument("--toy", action="store_true", help="offline demo on toy snippets")
    p.add_argument("--target", type=int, default=0, help="0 down, 1 flat, 2 up")
    p.add_argument("--steps", type=int, default=200, help="SGD steps of the universal perturbation")
    p.add_argument("--train-batches", type=int, default=20)
    p.add_argument("--gamma", type=float, default=0.05, help="relative size penalty")
    p.add_argument("--lr", type=float, default=5.0, help="Adam step in shares")
    p.add_argument("--levels", type=int, default=None, help="levels of the perturbation (default: the data's)")
    a = p.parse_args()
    if a.toy:
        models, train, test = toy_models(50, 5)
        levels = a.levels or 5
    else:
        if not a.config or not a.ckpt:
            p.error("give --config and --ckpt name=path (at least one), or --toy")
        models = dict((s.split("=", 1)[0], load_module(s.split("=", 1)[1])) for s in a.ckpt)
        dm = datamodule_from_config(a.config)
        loader = dm.train_dataloader()
        train = [b for _, b in zip(range(a.train_batches), loader)]
        test = list(dm.test_dataloader())
        levels = a.levels or dm.levels
    surrogates = {k: models[k] for k in (a.surrogates or list(models))}
    print(transfer_table(surrogates, models, train, test, a.target, a.steps, levels=levels, lr=a.lr, gamma=a.gamma))


if __name__ == "__main__":
    main()
