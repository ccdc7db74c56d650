"""Demo recipes built through the project's own stack (`setup_run`), for the benchmarks to time."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.shipped_recipes import ShippedRecipe, shipped_demo_recipes

RECIPES: dict[str, ShippedRecipe] = shipped_demo_recipes()  # every recipe of recipes/ with a demo, by name

_SCRATCH = Path(tempfile.mkdtemp(prefix="bench_"))
atexit.register(shutil.rmtree, _SCRATCH, ignore_errors=True)  # run outputs, adapters, subsets: not results


def scratch(name: str) -> Path:
    """A fresh output directory for one benchmark run (outside the repository)."""
    path = Path(tempfile.mkdtemp(prefix=f"{name}_", dir=_SCRATCH))
    return path


def demo_recipe(
    key: str, overrides: Sequence[str] = (), output_dir: Path | None = None, demo: bool = True
) -> Any:
    """The recipe's `--demo` variant (or the real one), W&B and plots off, into a scratch directory."""
    from trainers.recipe.loading import load_recipe

    out = output_dir or scratch(key)
    return load_recipe(
        str(RECIPES[key].path),
        [f"output_dir={out}", "reporting.wandb=false", "reporting.plots=false", *overrides],
        demo=demo,
    )


def demo_context(key: str, overrides: Sequence[str] = (), recipe: Any = None) -> Any:
    """`trainers.run.setup_run` of the demo recipe: model, freezing, data, evaluator, Trainer and callbacks."""
    from trainers.run import setup_run

    return setup_run(recipe if recipe is not None else demo_recipe(key, overrides))


def real_recipe(key: str) -> Any:
    """The recipe as declared (real model id, for the meta device), reading the demo's data files.

    Only the paths, and the fields the data config declares as describing the files they point at
    (`describing_fields`, e.g. the pose skeleton: its keypoint names), are swapped: the real data is not here, but the data section's policies (DETR's `data.backbone`, which the
    demo sets to "unfreeze") decide what trains and must stay the recipe's own.
    """
    import dataclasses

    recipe = demo_recipe(key, demo=False)
    demo = demo_recipe(key).data
    paths = {
        f.name: getattr(demo, f.name)
        for f in dataclasses.fields(demo)
        if isinstance(getattr(demo, f.name), str) and Path(getattr(demo, f.name)).exists()
    }
    describing = {name: getattr(demo, name) for name in getattr(type(demo), "describing_fields", ())}
    recipe.data = dataclasses.replace(recipe.data, **paths, **describing)
    return recipe
