"""LightningModules: natural and adversarial training, distillation (more methods arrive with their issues)."""
from .adv_training import METHODS, AdvTraining
from .classifier import Classifier
from .distill import ARD, KL_REDUCTIONS, FastARD, KnowledgeDistillation, distillation_kl
from .free import FreeReplay
from .optim import OptimConfig, build_optimizer, build_scheduler
from .regularizers import NormBias, Regularizer, coerce_regularizer
from .robust import RobustTrainingMixin
from .teacher import load_teacher

__all__ = [
    "ARD", "AdvTraining", "Classifier", "FastARD", "FreeReplay", "KL_REDUCTIONS", "KnowledgeDistillation", "METHODS",
    "NormBias", "OptimConfig", "Regularizer", "RobustTrainingMixin", "coerce_regularizer", "build_optimizer", "build_scheduler", "distillation_kl", "load_teacher",
]
