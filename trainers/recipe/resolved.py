"""A recipe with its task and model family looked up once, then passed on.

The recipe's data class names its task (`trainers.tasks.registry`) and `model.family` its registry entry
(`trainers.models.registry`). Looking them up in each step made several task instances per run (a task keeps
what its data taught it, e.g. a classifier's labels) and repeated the family's checks; a `ResolvedRecipe`
is built once where a run or a dry-run starts and every later step reads `.task` and `.family` from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from trainers.recipe.config import Recipe

if TYPE_CHECKING:
    from trainers.models.family import FamilyEntry
    from trainers.tasks.interface import Task


@dataclass(frozen=True)
class ResolvedRecipe:
    """`recipe` with the `task` its data is for (one instance for the whole run) and its model `family`."""

    recipe: Recipe
    task: Task
    family: FamilyEntry
    source: str | None = None  # the recipe file it was loaded from (the model card's reproduce command)


def resolve_recipe(recipe: Recipe | ResolvedRecipe) -> ResolvedRecipe:
    """Look up the recipe's task and family (a `ResolvedRecipe` is returned as it is)."""
    if isinstance(recipe, ResolvedRecipe):
        return recipe
    from trainers.models.registry import get_family
    from trainers.tasks.registry import get_task

    return ResolvedRecipe(recipe, get_task(recipe.data), get_family(recipe.model.family))
