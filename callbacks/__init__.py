"""Lightning callbacks: robust evaluation (PGD, attack suite), checkpointing, and the chapter-6 analysis callbacks."""
from ._suite_common import SuiteCallback, gather_records
from .attack_suite import AttackSuiteEvaluation
from .checkpoint import RobustCheckpoint
from .effective_rank import EffectiveRank
from .hessian import HessianEigenvalues
from .local_minima import LocalMinimumInit
from .ntk import NTKSnapshot, load_ntk_snapshots
from .pgd_evaluation import PGDEvaluation, default_eval_attacks
from .rank_projection import RankProjection
from .smoothing import SmoothingCertification

__all__ = [
    "AttackSuiteEvaluation", "EffectiveRank", "HessianEigenvalues", "LocalMinimumInit", "NTKSnapshot",
    "PGDEvaluation", "RankProjection", "RobustCheckpoint", "SmoothingCertification", "SuiteCallback",
    "default_eval_attacks", "gather_records", "load_ntk_snapshots",
]
