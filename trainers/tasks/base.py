"""What a task hands the trainer: datasets, a collator and an evaluator."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch.utils.data import Dataset

from trainers.errors import RecipeError

TASK_BUILDERS = {
    "captioning": "trainers.tasks.captioning.task:build_captioning_task",
}


@dataclass
class TaskParts:
    train_dataset: Dataset
    eval_dataset: Dataset
    data_collator: Callable[[list[dict]], dict]
    evaluator: Any | None = None  # callable(trainer) -> {metric: value}; may have close() and examples()


def build_task(task: str, recipe: Any, processor: Any) -> TaskParts:
    try:
        path = TASK_BUILDERS[task]
    except KeyError:
        raise RecipeError(f"task {task!r} is not known; available: {', '.join(sorted(TASK_BUILDERS))}.") from None
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)(recipe, processor)
