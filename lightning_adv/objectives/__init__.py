"""Training objectives as parts: what a step minimises, what its attack maximises, whether
the m-replay loop runs (``docs/objectives.md``)."""
from .adversarial import MART, PGDAT, TRADES, Free, PerturbationObjective, mart_loss, trades_loss
from .awp import AWP, awp_perturbation
from .base import KINDS, FreeObjective, Objective, StepOutput
from .certified import CROWNIBP, IBP, CertifiedObjective
from .distill import ARD, KD, KL_REDUCTIONS, FastARD, distillation_kl
from .fewshot import ADML, AQ, MetaNatural, MetaTRADES
from .protocols import ClassifierModule, EpisodicModule, TeacherModule, TrainedModule

__all__ = [
    "ADML", "AQ", "ARD", "AWP", "CROWNIBP", "CertifiedObjective", "ClassifierModule", "EpisodicModule", "FastARD", "Free",
    "FreeObjective", "IBP", "KD", "KINDS", "KL_REDUCTIONS", "MART", "MetaNatural", "MetaTRADES", "Objective", "PGDAT",
    "PerturbationObjective", "StepOutput", "TRADES", "TeacherModule", "TrainedModule",
    "awp_perturbation", "distillation_kl", "mart_loss", "trades_loss",
]
