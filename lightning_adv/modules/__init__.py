"""LightningModules: natural and adversarial training, distillation, adversarial querying; NormBias regulariser."""
from .adv_training import AdvTraining
from .adversarial_querying import AdversarialQuerying
from .certified import CertifiedTraining
from .classifier import Classifier
from .compute import ComputeConfig
from .distill import KL_REDUCTIONS, KnowledgeDistillation, distillation_kl
from .free import FreeReplay
from .objective_training import ObjectiveTraining
from .optim import OptimConfig, build_optimizer, build_scheduler, optimizers_and_schedule
from .price_prediction import PricePrediction
from .regularizers import NormBias, Regularizer, coerce_regularizer
from .robust import RobustTrainingMixin
from .teacher import load_teacher

__all__ = [
    "AdvTraining", "CertifiedTraining", "Classifier", "ComputeConfig", "FreeReplay", "KL_REDUCTIONS", "KnowledgeDistillation",
    "AdversarialQuerying",
    "NormBias", "ObjectiveTraining", "Regularizer", "coerce_regularizer", "OptimConfig", "PricePrediction",
    "RobustTrainingMixin", "build_optimizer", "build_scheduler", "distillation_kl", "load_teacher",
    "optimizers_and_schedule",
]
from .purified_fewshot import PURIFIERS, PurifiedFewShot, PurifiedLearner, load_fewshot  # noqa: E402
from .purifier_training import GANTraining, SRTraining  # noqa: E402

__all__ += ["GANTraining", "PURIFIERS", "PurifiedFewShot", "PurifiedLearner", "SRTraining", "load_fewshot"]
