"""Image classification: an image folder or CSV/JSONL list → a `*ForImageClassification` model, accuracy metrics.

Importing the package loads only the recipe dataclasses; the task itself (torch, PIL) is `TASK`, resolved
on use with `trainers.tasks.interface.load_task`.
"""

from trainers.tasks.classification.config import ClassificationData, ClassificationEval

TASK = "trainers.tasks.classification.task:ClassificationTask"

__all__ = ["TASK", "ClassificationData", "ClassificationEval"]
