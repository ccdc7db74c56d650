"""The shipped recipes that run with `--demo`, found in `recipes/`: what the benchmarks and the multi-rank tests
take their recipe lists from, so that a new recipe (or a new family's recipe) is measured and checked without
editing a list.

Reading a recipe file executes it (config dataclasses only: no torch, no model); its family is matched through
the family registry, so an old family id and its new name count as one family.
"""

from __future__ import annotations

import runpy
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainers.paths import RECIPES_DIR


@dataclass(frozen=True)
class ShippedRecipe:
    """One recipe file of `recipes/` that declares a demo model (`Model(demo=...)`)."""

    name: str  # the file's stem: `recipes/<name>.py`
    path: Path
    family: str  # model.family as the file spells it
    data_kind: str  # the data config's class: one per task
    lora: bool  # trains LoRA adapters
    stages: bool  # opens progressive-unfreezing stages

    @property
    def config(self) -> str:
        """What the recipe trains, in a word or two, with its name: a benchmark row's label."""
        kind = "LoRA" if self.lora else "freeze"
        return f"{kind}{' + stages' if self.stages else ''} ({self.name})"


def shipped_demo_recipes(recipes_dir: Path = RECIPES_DIR) -> dict[str, ShippedRecipe]:
    """Every recipe in `recipes_dir` that runs with `--demo`, by name, in name order."""
    found: dict[str, ShippedRecipe] = {}
    for path in sorted(recipes_dir.glob("*.py")):
        if path.name.startswith("_"):
            continue
        recipe: Any = runpy.run_path(str(path)).get("recipe")
        if recipe is None or recipe.model.demo is None:
            continue
        found[path.stem] = ShippedRecipe(
            name=path.stem,
            path=path,
            family=recipe.model.family,
            data_kind=type(recipe.data).__name__,
            lora=recipe.lora is not None,
            stages=bool(recipe.stages),
        )
    return found


def same_family(a: str, b: str) -> bool:
    """Whether two family ids name one registry entry (a renamed id and its new name do); an id the registry
    does not know matches only itself."""
    if a == b:
        return True
    from trainers.errors import RecipeError
    from trainers.models.registry import get_family

    try:
        return get_family(a) is get_family(b)
    except RecipeError:
        return False


def keyed_by_family(table: dict[str, Any], family: str, default: Any = None) -> Any:
    """`table[family]`, matching keys through the registry (see `same_family`); `default` for no match."""
    return next((value for key, value in table.items() if same_family(key, family)), default)


def one_per_family(
    recipes: Iterable[ShippedRecipe], where: Callable[[ShippedRecipe], bool] = lambda r: True
) -> tuple[str, ...]:
    """The first recipe (name order) of each family that passes `where`: one row per model."""
    chosen: dict[str, str] = {}
    for recipe in recipes:
        if where(recipe) and not any(same_family(family, recipe.family) for family in chosen):
            chosen[recipe.family] = recipe.name
    return tuple(chosen.values())


def one_per_task(recipes: Iterable[ShippedRecipe]) -> tuple[str, ...]:
    """The first recipe (name order) of each task (each data config class)."""
    chosen: dict[str, str] = {}
    for recipe in recipes:
        chosen.setdefault(recipe.data_kind, recipe.name)
    return tuple(chosen.values())
