"""The modules' constructor arguments from before training objectives were parts, and their conversion.

Only ``scripts/convert_checkpoint.py`` imports this module; the library itself knows only that a
checkpoint of an objective-trained module without ``objective`` in its hyperparameters is old, and
names the converter (``modules.objective_training.legacy_checkpoint_error``).

Before, ``AdvTraining`` chose its objective with ``method`` (+ ``trades_beta``,
``free_replays``, ``free_step_size``, ``attack``), distillation was the class chain
``KnowledgeDistillation -> ARD -> FastARD`` with ``attack_loss``/``perturbation_loss``
switches, and ``AdversarialQuerying`` took ``head`` x ``training_mode`` strings plus the
``maml_*`` arguments and ``lr_factors``. :func:`convert_hparams` rewrites such arguments
(a checkpoint's ``hyper_parameters``, or keyword arguments) into the new ones;
:func:`convert_state_dict` renames the few-shot parameters that moved into the learner.
"""
from __future__ import annotations

from typing import Any

__all__ = ["convert_hparams", "convert_state_dict", "legacy_class"]

_TRAINING_MODES = {"natural": "MetaNatural", "aq": "AQ", "trades": "MetaTRADES", "adml": "ADML"}


def _attack_arg(attack: Any, name: str) -> Any:
    if attack is None:
        return None
    if isinstance(attack, dict):
        return (attack.get("init_args") or {}).get(name) if "class_path" in attack else attack.get(name)
    return getattr(attack, name, None)


def _obj(name: str, **args: Any) -> dict[str, Any]:
    return {"class_path": f"lightning_adv.objectives.{name}", "init_args": {k: v for k, v in args.items() if v is not None}}


def legacy_class(hparams: dict[str, Any]) -> str:
    """The module class a pre-objectives checkpoint's hyperparameters belong to."""
    path = str(hparams.get("_class_path", ""))
    if path:
        return path.rsplit(".", 1)[-1]
    if "training_mode" in hparams or "head" in hparams:
        return "AdversarialQuerying"
    if "perturbation_loss" in hparams or "free_replays" in hparams and "teacher_arch" in hparams:
        return "FastARD"
    if "attack_loss" in hparams:
        return "ARD"
    if "teacher_arch" in hparams:
        return "KnowledgeDistillation"
    return "AdvTraining"


def _adv_training(hp: dict[str, Any]) -> dict[str, Any]:
    method = hp.pop("method", "pgd")
    attack, beta = hp.pop("attack", None), hp.pop("trades_beta", 6.0)
    replays, step = hp.pop("free_replays", 4), hp.pop("free_step_size", None)
    if method == "pgd":
        hp["objective"] = _obj("PGDAT", attack=attack)
    elif method == "trades":
        hp["objective"] = _obj("TRADES", beta=beta, attack=attack)
    elif method == "free":
        hp["objective"] = _obj("Free", eps=_attack_arg(attack, "eps"), norm=_attack_arg(attack, "norm"),
                               replays=replays, step_size=step)
    else:
        raise ValueError(f"method={method!r} is not one of ('pgd', 'trades', 'free')")
    return hp


def _distill(cls: str, hp: dict[str, Any]) -> dict[str, Any]:
    kd = {k: hp.pop(k) for k in ("temperature", "alpha", "kl_reduction") if k in hp}
    ard = {k: hp.pop(k) for k in ("teacher_input", "clean_kd_weight") if k in hp}
    attack, attack_loss = hp.pop("attack", None), hp.pop("attack_loss", None)
    replays, step, ploss = hp.pop("free_replays", None), hp.pop("free_step_size", None), hp.pop("perturbation_loss", None)
    if cls == "KnowledgeDistillation":
        hp["objective"] = _obj("KD", **kd)
    elif cls == "ARD":
        hp["objective"] = _obj("ARD", **kd, **ard, attack=attack, attack_loss=attack_loss)
    else:
        hp["objective"] = _obj("FastARD", **kd, **ard, eps=_attack_arg(attack, "eps"), norm=_attack_arg(attack, "norm"),
                               ascent_bn_mode=_attack_arg(attack, "bn_mode"), replays=replays, step_size=step,
                               perturbation_loss=ploss)
    return hp


def _fewshot(hp: dict[str, Any]) -> dict[str, Any]:
    head, head_kwargs, ways = hp.pop("head", "r2d2"), hp.pop("head_kwargs", None), hp.pop("ways", 5)
    maml = {k[5:]: hp.pop(k) for k in ("maml_layers", "maml_lr", "maml_steps", "maml_test_steps", "maml_first_order")
            if k in hp}
    if head == "maml":
        if head_kwargs:
            raise ValueError(f"head_kwargs={head_kwargs} are not used by head='maml'; use the maml_* arguments")
        # the behaviour these checkpoints were evaluated with: running BatchNorm statistics
        hp["learner"] = {"class_path": "lightning_adv.meta.MAML",
                         "init_args": {"ways": ways, **maml, "eval_bn": "running"}}
    else:
        hp["learner"] = {"class_path": "lightning_adv.meta.HeadLearner",
                         "init_args": {"head": head, "head_kwargs": head_kwargs}}
    mode, attack, beta = hp.pop("training_mode", "aq"), hp.pop("attack", None), hp.pop("trades_beta", 1.0)
    if mode not in _TRAINING_MODES:
        raise ValueError(f"training_mode={mode!r} is not one of {tuple(_TRAINING_MODES)}")
    args = {} if mode == "natural" else {"attack": attack}
    if mode == "trades":
        args["beta"] = beta
    hp["objective"] = _obj(_TRAINING_MODES[mode], **args)
    factors = hp.pop("lr_factors", None)
    if factors is not None:
        optim = hp.get("optim")
        if optim is None or isinstance(optim, dict):
            hp["optim"] = {**(optim or {}), "lr_factors": factors}
        else:
            from dataclasses import replace
            hp["optim"] = replace(optim, lr_factors=factors)
    return hp


def convert_hparams(hparams: dict[str, Any], cls: str = "") -> tuple[str, dict[str, Any]]:
    """``(new class name, new hyperparameters)`` from pre-objectives ones (a copy)."""
    hp = dict(hparams)
    cls = cls or legacy_class(hp)
    if cls == "AdvTraining":
        return cls, _adv_training(hp)
    if cls in ("KnowledgeDistillation", "ARD", "FastARD"):
        hp = _distill(cls, hp)
        if "_class_path" in hp:
            hp["_class_path"] = "lightning_adv.modules.KnowledgeDistillation"
        return "KnowledgeDistillation", hp
    if cls == "AdversarialQuerying":
        return cls, _fewshot(hp)
    raise ValueError(f"no conversion for class {cls!r}")


def convert_state_dict(state: dict[str, Any], cls: str) -> dict[str, Any]:
    """Few-shot parameters moved into the learner: ``maml_linear.*`` / ``head.*`` -> ``learner.*``."""
    if cls != "AdversarialQuerying":
        return state
    out = {}
    for k, v in state.items():
        if k.startswith("maml_linear."):
            k = "learner.linear." + k[len("maml_linear."):]
        elif k.startswith("head."):
            k = "learner." + k
        out[k] = v
    return out
