"""Finished runs as `python -m trainers.predict` reads them, without training: a recipe's tiny demo model (its
spec, seed 0) saved as a full model in `best/` beside the run's `recipe.json`. For the tests of the plain-image
tools (predict, its options, the bad-input catalogue), where what the weights learned does not matter."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import ROOT


def untrained_run(
    recipe_file: str,
    family: str,
    task: str,
    out: Path,
    overrides: tuple[str, ...] = (),
    edit: Callable[[Any], None] | None = None,
) -> Path:
    """`out`, a finished full-model run of `recipe_file --demo lora=none` (overrides after), never trained;
    `edit(model)` may set weights by hand before it is saved."""
    from trainers.models.registry import get_family
    from trainers.recipe import load_recipe
    from trainers.rerun import resolved_recipe_dict
    from trainers.tasks.interface import load_task
    from trainers.tasks.registry import TASKS

    cwd = os.getcwd()
    os.chdir(ROOT)  # the recipes name the shipped data relative to the repository
    try:
        recipe = load_recipe(recipe_file, ["lora=none", *overrides, f"output_dir={out}"], demo=True)
        labels = load_task(TASKS[task]).model_kwargs(recipe)
    finally:
        os.chdir(cwd)
    model, processor = get_family(family).build_tiny()(recipe.model.demo, seed=0, **labels)
    if edit is not None:
        edit(model)
    model.save_pretrained(out / "best")
    processor.save_pretrained(out / "best")
    (out / "recipe.json").write_text(json.dumps(resolved_recipe_dict(recipe)))
    return out
