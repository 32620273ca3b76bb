#!/usr/bin/env python
"""Train, validate or test any experiment of lightning-adv.

    python train.py fit --config configs/quickstart.yaml
    python train.py fit --config configs/at_resnet18_cifar10.yaml --model.objective.init_args.attack.steps 7 --trainer.devices 2
    python train.py test --config configs/quickstart.yaml --ckpt_path runs/quickstart/version_0/checkpoints/last.ckpt

A bad input ends with one line `error: <parameter>=<value> ...; <fix>` (exit status 2);
LIGHTNING_ADV_DEBUG=1 prints the full traceback too. See lightning_adv/cli.py for the defaults and README.md for the configs.
"""
from lightning_adv.cli import cli_main

if __name__ == "__main__":
    cli_main()
