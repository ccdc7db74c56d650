"""Recipe checks that need more than the recipe itself: the task and family, its metric names, the data on disk.

They run at recipe load / before any model is loaded, so a typo or a missing folder fails in the first
second (and in `--dry-run`) instead of after a download or an epoch of training. The task says what is
right (`trainers.tasks.interface.Task`); nothing here knows a task.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from trainers.errors import RecipeError
from trainers.fsdp import check_fsdp
from trainers.recipe.config import CompositeMetric, Recipe
from trainers.recipe.resolved import ResolvedRecipe, resolve_recipe

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


def check_task(recipe: Recipe | ResolvedRecipe) -> Task:
    """`check_recipe`, for the task alone."""
    return check_recipe(recipe).task


def check_recipe(recipe: Recipe | ResolvedRecipe) -> ResolvedRecipe:
    """Quantization needs LoRA and no ZeRO-3; FSDP no stages, ZeRO or quantization; the task's evaluation settings and metric names; that the
    model family serves the task, and declares a layer layout if the recipe asks for layer decay. Returns the
    recipe resolved (its task and family), for the steps after."""
    from trainers.tasks.interface import check_metric_names

    resolved = resolve_recipe(recipe)
    recipe, task = resolved.recipe, resolved.task
    if recipe.model.quantization is not None:  # imports torch: only for recipes that quantize
        from trainers.lora.quantize import check_quantization

        check_quantization(
            recipe.model.quantization, lora=recipe.lora is not None, zero_stage=recipe.launch.zero
        )
    check_fsdp(recipe)
    from trainers.metrics.java import java_checked_where_the_run_scores

    submitted = recipe.launch.launcher == "slurm" and "SLURM_JOB_ID" not in os.environ  # the nodes check it
    with java_checked_where_the_run_scores(submitted):
        task.check_evaluation(recipe.evaluation)
    check_metric_names(
        task,
        recipe.evaluation,
        early_stopping_metrics(recipe),
        extra_sets=tuple(getattr(recipe.data, "extra_val", None) or ()),
    )
    resolved.family.check_serves(task.name)
    resolved.family.check_layer_decay(recipe.layer_decay_keys())
    return resolved


def missing_data_paths(recipe: Recipe | ResolvedRecipe) -> list[str]:
    """`key 'path' (what)` for each data path that does not exist, in recipe order."""
    resolved = resolve_recipe(recipe)
    return resolved.task.missing_data(resolved.recipe)


def check_data_paths(recipe: Recipe | ResolvedRecipe, warn_only: bool = False) -> list[str]:
    """Stop (or, for a dry-run, warn) when a data file or image folder is missing: before any model load.

    A dry-run only warns: it is how a recipe is inspected before its data exists (and on another machine).
    """
    resolved = resolve_recipe(recipe)
    recipe, task = resolved.recipe, resolved.task
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
