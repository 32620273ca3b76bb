"""The attack engine: threat models, one PGD loop with pluggable losses, FGSM."""
from .losses import ATTACK_LOSSES, LossFn, cross_entropy_loss, get_attack_loss, kl_loss, margin_loss
from .pgd import BN_MODES, FGSM, PGD, attack_grad_context, module_mode, pgd
from .threat import THREAT_MODELS, L2Threat, LinfThreat, ThreatModel, clamp_to_image, make_threat

__all__ = [
    "ATTACK_LOSSES", "BN_MODES", "FGSM", "L2Threat", "LinfThreat", "LossFn", "PGD", "THREAT_MODELS",
    "ThreatModel", "attack_grad_context", "clamp_to_image", "cross_entropy_loss", "get_attack_loss",
    "kl_loss", "make_threat", "margin_loss", "module_mode", "pgd",
]
