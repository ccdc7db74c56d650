"""Recipe checks that need more than the recipe itself: the task and family, its metric names, the data on disk.

They run at recipe load / before any model is loaded, so a typo or a missing folder fails in the first
second (and in `--dry-run`) instead of after a download or an epoch of training. The task says what is
right (`trainers.tasks.interface.Task`); nothing here knows a task.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from trainers.errors import RecipeError
from trainers.recipe.config import CompositeMetric, Recipe

if TYPE_CHECKING:
    from trainers.tasks.interface import Task

logger = logging.getLogger(__name__)


def recipe_task(recipe: Recipe) -> Task:
    """The task the recipe's data is for (a fresh instance)."""
    from trainers.tasks.registry import get_task

    return get_task(recipe.data)


def early_stopping_metrics(recipe: Recipe) -> dict[str, tuple[str, ...]]:
    """The recipe key naming the early-stopping metric → the metric names it needs (a `mean(...)`: its parts)."""
    es = recipe.early_stopping
    if es is None:
        return {}
    if isinstance(es.metric, CompositeMetric):
        return {
            f"early_stopping.metric ({es.metric.name} = mean of {list(es.metric.parts)})": es.metric.parts
        }
    return {"early_stopping.metric": (es.metric,)}


def check_task(recipe: Recipe, task: Task | None = None) -> Task:
    """Quantization needs LoRA and no ZeRO-3; the task's evaluation settings and metric names; and that the
    model family serves the task."""
    from trainers.models.registry import get_family
    from trainers.tasks.interface import check_metric_names

    task = task or recipe_task(recipe)
    if recipe.model.quantization is not None:  # imports torch: only for recipes that quantize
        from trainers.lora.quantize import check_quantization

        check_quantization(
            recipe.model.quantization, lora=recipe.lora is not None, zero_stage=recipe.launch.zero
        )
    task.check_evaluation(recipe.evaluation)
    check_metric_names(
        task,
        recipe.evaluation,
        early_stopping_metrics(recipe),
        extra_sets=tuple(getattr(recipe.data, "extra_val", None) or ()),
    )
    get_family(recipe.model.family).check_serves(task.name)
    return task


def missing_data_paths(recipe: Recipe, task: Task | None = None) -> list[str]:
    """`key 'path' (what)` for each data path that does not exist, in recipe order."""
    return (task or recipe_task(recipe)).missing_data(recipe)


def check_data_paths(recipe: Recipe, warn_only: bool = False, task: Task | None = None) -> list[str]:
    """Stop (or, for a dry-run, warn) when a data file or image folder is missing: before any model load.

    A dry-run only warns: it is how a recipe is inspected before its data exists (and on another machine).
    """
    task = task or recipe_task(recipe)
    missing = task.missing_data(recipe)
    if not missing:
        return []
    note = (
        ""
        if recipe.model.use_demo_model
        else f" Checked before the model {recipe.model.id} is loaded or downloaded."
    )
    message = task.missing_data_message(recipe, missing, note)
    if warn_only:
        logger.warning("%s", message)
        return missing
    raise RecipeError(message)
