"""Image captioning: `{filename: caption}` JSON + image folder → a captioning model, caption metrics.

Importing the package loads only the recipe dataclasses; the task itself is `TASK`, resolved on use.
"""

from trainers.tasks.captioning.config import CaptionData, CaptionEval, Evaluation

TASK = "trainers.tasks.captioning.task:CaptioningTask"

__all__ = ["TASK", "CaptionData", "CaptionEval", "Evaluation"]
