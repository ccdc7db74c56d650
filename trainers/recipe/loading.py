"""Load a recipe file (a Python script that builds `recipe = Recipe(...)`) and resolve it.

Resolution order: the file's recipe → its `demo` overrides (with `--demo`) → command-line overrides →
validation (the task's evaluation settings and metric names, the family serving the task). The file is executed as a script, so a recipe may compute values or define callbacks.
"""

from __future__ import annotations

import dataclasses
import runpy
import traceback
from pathlib import Path
from typing import Any

from trainers.errors import RecipeError
from trainers.recipe.checks import check_recipe
from trainers.recipe.config import Recipe
from trainers.recipe.overrides import apply_overrides, parse_override, set_by_path, setting_source
from trainers.recipe.resolved import ResolvedRecipe
from trainers.recipe.yaml_config import apply_config_file


def load_recipe(
    path: str | Path,
    overrides: list[str] | None = None,
    demo: bool = False,
) -> Recipe:
    """Execute the recipe file, apply demo and CLI overrides, validate."""
    return load_resolved(path, overrides, demo).recipe


def load_resolved(
    path: str | Path,
    overrides: list[str] | None = None,
    demo: bool = False,
) -> ResolvedRecipe:
    """`load_recipe`, keeping the task and family that validation looked up (a run passes them on)."""
    recipe = _execute(Path(path))
    overrides = list(overrides or [])
    early = [
        o for o in overrides if parse_override(o)[0].split(".")[0] == "demo"
    ]  # before --demo applies them
    apply_overrides(recipe, early)
    overrides = [o for o in overrides if o not in early]
    if demo:
        apply_demo(recipe)
    config = [o for o in overrides if parse_override(o)[0] == "config"]  # --config FILE: applied first
    apply_overrides(recipe, config)
    if recipe.config is not None:
        apply_config_file(recipe, recipe.config)
    apply_overrides(recipe, [o for o in overrides if o not in config])
    try:
        recipe.validate()
        return dataclasses.replace(check_recipe(recipe), source=str(path))
    except RecipeError as exc:
        raise RecipeError(_with_source(recipe, str(exc))) from None


def _with_source(recipe: Recipe, message: str) -> str:
    """Prefix `file:line` when the error's leading key was set in a config file (or on the command line)."""
    keys = sorted((k for k in getattr(recipe, "_setting_sources", {}) if message.startswith(k)), key=len)
    return f"{setting_source(recipe, keys[-1])}: {message}" if keys else message


DEMO_SUFFIX = "_demo"  # `outputs/vit_lora` → `outputs/vit_lora_demo` unless the demo names its own folder


def apply_demo(recipe: Recipe) -> None:
    """Switch to the tiny offline model and apply the recipe's `demo` overrides; the output folder gets
    `_demo` appended unless the demo overrides set one."""
    if recipe.model.demo is None:
        raise RecipeError(
            f"Recipe {recipe.name!r} declares no demo model (Model(demo=...)); it cannot run with --demo."
        )
    recipe.model.use_demo_model = True
    if "output_dir" not in recipe.demo:  # a demo never writes into the real run's folder
        recipe.output_dir = recipe.output_dir.rstrip("/") + DEMO_SUFFIX
    for key, value in recipe.demo.items():
        try:
            set_by_path(recipe, key, value)
        except RecipeError as exc:
            raise RecipeError(f"Recipe {recipe.name!r}, demo override {key!r}: {exc}") from None


def _execute(path: Path) -> Recipe:
    if not path.is_file():
        hint = ""
        sibling = path.parent if path.parent.is_dir() else Path("recipes")
        if sibling.is_dir():
            found = sorted(p.name for p in sibling.glob("*.py") if not p.name.startswith("_"))
            hint = f" Recipes in {sibling}/: {', '.join(found)}." if found else ""
        raise RecipeError(f"Recipe file {str(path)!r} does not exist.{hint}")
    try:
        namespace = runpy.run_path(str(path), run_name="__recipe__")
    except SyntaxError as exc:
        raise RecipeError(
            f"Recipe {exc.filename}:{exc.lineno}: syntax error: {exc.msg}. Fix the recipe file."
        ) from None
    except RecipeError as exc:
        raise RecipeError(f"Recipe {path}{_recipe_line(exc, path)}: {exc}") from None
    except Exception as exc:  # the recipe is user code: say where it failed, not a bare traceback
        raise RecipeError(
            f"Recipe {path}{_recipe_line(exc, path)} raised {type(exc).__name__}: {exc}. Fix the recipe file there."
        ) from None
    recipe: Any = namespace.get("recipe")
    if not isinstance(recipe, Recipe):
        found = type(recipe).__name__ if recipe is not None else "nothing"
        raise RecipeError(
            f"Recipe {path} must define a module-level `recipe = Recipe(...)`; it defines {found}."
        )
    return recipe


def _recipe_line(exc: BaseException, path: Path) -> str:
    """`:LINE` of the innermost frame inside the recipe file, if any."""
    lines = [f.lineno for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename) == path]
    return f":{lines[-1]}" if lines else ""
