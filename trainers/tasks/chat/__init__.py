"""Chat fine-tuning of vision-language models: JSONL conversations with images, rendered through the model's own
chat template, loss on the assistant's tokens only, evaluated by generating the last answer.

Importing the package loads only the recipe dataclasses; the task itself (torch, PIL) is `TASK`, resolved on
use. `shapes` generates the shipped counting / colour question set.
"""

from trainers.tasks.chat.config import ChatData, ChatEval

TASK = "trainers.tasks.chat.task:ChatTask"

__all__ = ["TASK", "ChatData", "ChatEval"]
