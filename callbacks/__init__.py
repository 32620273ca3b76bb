"""Lightning callbacks: robust evaluation and checkpointing (analysis callbacks arrive with their issues)."""
from .attack_suite import AttackSuiteEvaluation
from .checkpoint import RobustCheckpoint
from .pgd_evaluation import PGDEvaluation, default_eval_attacks

__all__ = ["AttackSuiteEvaluation", "PGDEvaluation", "RobustCheckpoint", "default_eval_attacks"]
