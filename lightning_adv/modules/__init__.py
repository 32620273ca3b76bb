"""LightningModules: natural and adversarial training (more methods arrive with their issues)."""
from .adv_training import METHODS, AdvTraining
from .classifier import Classifier
from .free import FreeReplay
from .optim import OptimConfig, build_optimizer, build_scheduler

__all__ = ["AdvTraining", "Classifier", "FreeReplay", "METHODS", "OptimConfig", "build_optimizer", "build_scheduler"]
