"""Contracts: each module gives what its objectives may use of it (``lightning_adv/objectives/protocols.py``),
and no more is assumed; config dataclasses are frozen (a config is read, never changed in place)."""
from __future__ import annotations

import dataclasses

import pytest

from lightning_adv.modules import ComputeConfig, OptimConfig
from lightning_adv.orderbook.simulator import SimulatorConfig
from lightning_adv.modules import AdversarialQuerying, AdvTraining, CertifiedTraining, KnowledgeDistillation
from lightning_adv.objectives import ClassifierModule, EpisodicModule, TeacherModule


def test_modules_satisfy_the_protocols_of_their_objectives():
    adv = AdvTraining(arch="small_cnn", in_channels=1, arch_kwargs={"width": 4})
    assert isinstance(adv, ClassifierModule) and not isinstance(adv, (TeacherModule, EpisodicModule))
    assert isinstance(CertifiedTraining(arch="small_cnn", arch_kwargs={"width": 4}), ClassifierModule)
    kd = KnowledgeDistillation(arch="small_cnn", in_channels=1, arch_kwargs={"width": 4}, teacher_arch="small_cnn")
    assert isinstance(kd, TeacherModule)
    aq = AdversarialQuerying(arch="conv4", in_channels=1, image_size=28, arch_kwargs={"width": 4})
    assert isinstance(aq, EpisodicModule) and not isinstance(aq, ClassifierModule)
    assert adv.current_epoch == 0 and aq.global_step == 0  # outside a Trainer, as AWP's warm-up reads it


@pytest.mark.parametrize("config,field,value", [(OptimConfig(milestones=[2, 4]), "lr", 0.5),
                                                (ComputeConfig(), "compile", True), (SimulatorConfig(), "days", 3)])
def test_config_dataclasses_are_frozen(config, field, value):
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(config, field, value)
    changed = dataclasses.replace(config, **{field: value})  # a changed copy is checked like a new one
    assert getattr(changed, field) == value and type(changed) is type(config)
    assert OptimConfig(milestones=[2.0, 4.0]).milestones == [2, 4]  # normalised in __post_init__ despite frozen
