"""LightningModules: natural and adversarial training, distillation, adversarial querying; NormBias regulariser."""
from .adv_training import METHODS, AdvTraining
from .adversarial_querying import FEWSHOT_HEADS, TRAINING_MODES, AdversarialQuerying
from .certified import CertifiedTraining
from .classifier import Classifier
from .distill import ARD, KL_REDUCTIONS, FastARD, KnowledgeDistillation, distillation_kl
from .free import FreeReplay
from .optim import OptimConfig, build_optimizer, build_scheduler
from .price_prediction import PricePrediction
from .regularizers import NormBias, Regularizer, coerce_regularizer
from .robust import RobustTrainingMixin
from .teacher import load_teacher

__all__ = [
    "ARD", "AdvTraining", "CertifiedTraining", "Classifier", "FastARD", "FreeReplay", "KL_REDUCTIONS", "KnowledgeDistillation", "METHODS",
    "AdversarialQuerying", "FEWSHOT_HEADS", "TRAINING_MODES", "NormBias", "Regularizer", "coerce_regularizer",
    "OptimConfig", "PricePrediction", "RobustTrainingMixin", "build_optimizer", "build_scheduler", "distillation_kl", "load_teacher",
]
from .purified_fewshot import PURIFIERS, PurifiedFewShot, PurifiedLearner, load_fewshot  # noqa: E402
from .purifier_training import GANTraining, SRTraining  # noqa: E402

__all__ += ["GANTraining", "PURIFIERS", "PurifiedFewShot", "PurifiedLearner", "SRTraining", "load_fewshot"]
