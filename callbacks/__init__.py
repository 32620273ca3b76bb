"""Lightning callbacks: robust evaluation (PGD, attack suite, RobustBench-style report), checkpointing, weight averaging (EMA),
and the chapter-6 analysis callbacks."""
from ._suite_common import SuiteCallback, gather_records
from .attack_suite import AttackSuiteEvaluation
from .checkpoint import RobustCheckpoint
from .collapse import CollapseWarning
from .effective_rank import EffectiveRank
from .ema import EMA, WarmupEMA
from .hessian import HessianEigenvalues
from .hparams import HparamsMetrics
from .local_minima import LocalMinimumInit
from .ntk import NTKSnapshot, load_ntk_snapshots
from .pgd_evaluation import PGDEvaluation, default_eval_attacks
from .rank_projection import RankProjection
from .resume import FiniteGuard, RankErrorReport, ResumeState
from .robustness_report import RobustnessReport
from .smoothing import SmoothingCertification

__all__ = [
    "AttackSuiteEvaluation", "CollapseWarning", "EMA", "EffectiveRank", "FiniteGuard", "HessianEigenvalues", "HparamsMetrics",
    "LocalMinimumInit", "NTKSnapshot",
    "PGDEvaluation", "RankErrorReport", "RankProjection", "ResumeState", "RobustCheckpoint", "RobustnessReport",
    "SmoothingCertification",
    "SuiteCallback", "WarmupEMA", "default_eval_attacks", "gather_records", "load_ntk_snapshots",
]
