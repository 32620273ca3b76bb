"""Convert a checkpoint written before training objectives were parts (issue 11).

    python scripts/convert_checkpoint.py OLD.ckpt NEW.ckpt

Rewrites ``hyper_parameters`` (``method``/``attack``/..., ``ARD``/``FastARD`` classes,
``head``/``training_mode``/``maml_*``/``lr_factors``) into ``objective`` / ``learner`` parts
and renames the few-shot parameters that moved into the learner. Loads with
``weights_only=True``. Converted MAML checkpoints keep ``eval_bn: running``, the BatchNorm
behaviour they were evaluated with; set ``--model.learner.init_args.eval_bn batch`` for the
authors' one.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lightning_adv.compat import convert_hparams, convert_state_dict, legacy_class  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src")
    parser.add_argument("dst")
    args = parser.parse_args(argv)
    ckpt = torch.load(args.src, map_location="cpu", weights_only=True)
    hp = ckpt.get("hyper_parameters") or {}
    if "objective" in hp:
        print(f"{args.src} already has an objective; nothing to convert")
        return 1
    cls = legacy_class(hp)
    new_cls, ckpt["hyper_parameters"] = convert_hparams(hp, cls)
    ckpt["state_dict"] = convert_state_dict(ckpt.get("state_dict", {}), new_cls)
    torch.save(ckpt, args.dst)
    print(f"{cls} -> {new_cls} with objective {ckpt['hyper_parameters']['objective']['class_path']}: {args.dst}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
