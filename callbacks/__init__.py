"""Lightning callbacks: robust evaluation and checkpointing (analysis callbacks arrive with their issues)."""
from .checkpoint import RobustCheckpoint
from .pgd_evaluation import PGDEvaluation, default_eval_attacks

__all__ = ["PGDEvaluation", "RobustCheckpoint", "default_eval_attacks"]
