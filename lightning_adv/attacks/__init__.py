"""The attack engine: threat models, one PGD loop with pluggable losses, FGSM; the
evaluation suite: white-box, black-box and AutoAttack attacks, per-example report, sanity flags."""
from .adaptive import BPDA
from .autoattack import AUTOATTACK_COMPONENTS, AUTOATTACK_VERSIONS, AutoAttack
from .base import Attack, AttackOutput, frozen_parameters, perturbation_norm
from .blackbox import Square, ZerothOrder, zo_gradient
from .context import BN_MODES, as_normal, attack_grad_context, module_mode
from .losses import ATTACK_LOSSES, LossFn, cross_entropy_loss, get_attack_loss, kl_loss, margin_loss
from .pgd import input_gradient, pgd, success
from .report import AttackRow, SanityFlag, SuiteReport, concat_records, dedup_records, worst_case
from .suite import AttackSuite, FewShotLearnerModule, GradientMaskingWarning, evaluate, is_few_shot
from .threat import THREAT_MODELS, L2Threat, LinfThreat, ThreatModel, clamp_to_image, make_threat
from .whitebox import FGSM, PGD, TARGET_MODES, CarliniWagnerL2, DeepFool, MIFGSM, choose_targets

__all__ = [
    "ATTACK_LOSSES", "AUTOATTACK_COMPONENTS", "AUTOATTACK_VERSIONS", "Attack", "AttackOutput", "AttackRow",
    "AttackSuite", "AutoAttack", "BPDA",
    "BN_MODES", "CarliniWagnerL2", "DeepFool", "FGSM", "FewShotLearnerModule", "GradientMaskingWarning",
    "L2Threat", "LinfThreat", "LossFn", "MIFGSM", "PGD", "SanityFlag", "Square", "SuiteReport",
    "TARGET_MODES", "THREAT_MODELS", "ThreatModel", "ZerothOrder", "as_normal", "attack_grad_context", "choose_targets",
    "clamp_to_image", "concat_records", "cross_entropy_loss", "dedup_records", "evaluate", "frozen_parameters",
    "get_attack_loss", "input_gradient", "is_few_shot", "kl_loss", "make_threat", "margin_loss", "module_mode",
    "perturbation_norm", "pgd", "success", "worst_case", "zo_gradient",
]
