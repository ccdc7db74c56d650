"""Image–text retrieval: caption–image pairs (several captions per image) → a dual encoder, recall@K metrics.

Importing the package loads only the recipe dataclasses; the task itself (torch, PIL) is `TASK`, resolved
on use with `trainers.tasks.interface.load_task`.
"""

from trainers.tasks.retrieval.config import RetrievalData, RetrievalEval

TASK = "trainers.tasks.retrieval.task:RetrievalTask"

__all__ = ["TASK", "RetrievalData", "RetrievalEval"]
