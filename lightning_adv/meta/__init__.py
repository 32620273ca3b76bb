"""Few-shot plumbing around learn2learn: heads (R2-D2 here; ProtoNet, MetaOptNet from
learn2learn), episodic task sets, and per-episode accuracy with confidence intervals."""
from .heads import (HEADS, FewShotHead, MetaOptNetHead, ProtoNetHead, R2D2Head, ridge_dual_weights,
                    ridge_regression_logits)
from .metrics import EpisodeAccuracy, episode_accuracy
from .tasks import EpisodeDataset, check_task_shape, split_support_query

__all__ = [
    "HEADS", "EpisodeAccuracy", "episode_accuracy", "EpisodeDataset", "FewShotHead", "MetaOptNetHead", "ProtoNetHead", "R2D2Head",
    "check_task_shape", "ridge_dual_weights", "ridge_regression_logits", "split_support_query",
]
from .learners import HeadLearner, Learner, SingleTask, coerce_learner  # noqa: E402
from .maml import EVAL_BN, MAML, batch_statistics  # noqa: E402

__all__ += ["EVAL_BN", "HeadLearner", "Learner", "MAML", "SingleTask", "batch_statistics", "coerce_learner"]
