"""The tasks the core knows: one `"module:Class"` line each, resolved on use (task modules import torch).

A recipe's data class names its task (`CaptionData.task == "captioning"`), so the task follows from the data.
"""

from __future__ import annotations

from typing import Any

from trainers.errors import RecipeError
from trainers.tasks.interface import Task, load_task

TASKS: dict[str, str] = {
    "captioning": "trainers.tasks.captioning.task:CaptioningTask",
    "chat": "trainers.tasks.chat.task:ChatTask",
    "classification": "trainers.tasks.classification.task:ClassificationTask",
    "detection": "trainers.tasks.detection.task:DetectionTask",
    "prompted-generation": "trainers.tasks.prompted_generation.task:PromptedGenerationTask",
    "pose": "trainers.tasks.pose.task:PoseTask",
    "retrieval": "trainers.tasks.retrieval.task:RetrievalTask",
}


def task_name(data: Any) -> str:
    """The task a recipe's data section is for (its class's `task`)."""
    name = getattr(type(data), "task", None)
    if not isinstance(name, str):
        raise RecipeError(
            f"data: {type(data).__name__} names no task; use a task's data class "
            f"(e.g. CaptionData or ClassificationData). Known tasks: {', '.join(sorted(TASKS))}."
        )
    if name not in TASKS:
        raise RecipeError(
            f"data: task {name!r} of {type(data).__name__} is not known; known: {', '.join(sorted(TASKS))}."
        )
    return name


def get_task(data: Any) -> Task:
    """A fresh instance of the task the data is for (a run keeps state in it: processor, scorer)."""
    task = load_task(TASKS[task_name(data)])
    if not isinstance(data, task.data_config):
        raise RecipeError(
            f"data: the {task.name} task takes data={task.data_config.__name__}(...), got {type(data).__name__}."
        )
    return task
