"""Certified robustness: bound propagation (IBP, CROWN, CROWN-IBP) on a model walked into a
chain of layers, certified training losses, randomized smoothing, and :class:`Certify`, the
certified row of the attack suite. Pure functions on plain modules; no Lightning."""
from .crown import INTERMEDIATE, crown_layer_bounds, crown_margin
from .evaluate import CERTIFY_METHODS, Certify, certified, margin_lower_bound
from .ibp import check_ball, ibp_margin, interval_bounds, margin_spec
from .network import SEQUENTIAL_MODELS, SUPPORTED, BoundNetwork
from .smoothing import ABSTAIN, SmoothingResult, certify as smoothing_certify, check_smoothing, \
    clopper_pearson_lower, predict as smoothing_predict, sample_counts
from .training import TRAINING_METHODS, certified_loss, certified_margin, ramp, robust_cross_entropy

__all__ = [
    "ABSTAIN", "BoundNetwork", "CERTIFY_METHODS", "Certify", "INTERMEDIATE", "SEQUENTIAL_MODELS", "SUPPORTED",
    "SmoothingResult", "TRAINING_METHODS", "certified", "certified_loss", "certified_margin", "check_ball",
    "check_smoothing", "clopper_pearson_lower", "crown_layer_bounds", "crown_margin", "ibp_margin",
    "interval_bounds", "margin_lower_bound", "margin_spec", "ramp", "robust_cross_entropy", "sample_counts",
    "smoothing_certify", "smoothing_predict",
]
