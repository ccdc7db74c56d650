"""What a run checks before any worker process starts or any model loads (`launch.py` calls it).

The data must exist (so a missing folder never costs a model download or a launcher start-up), no other run
may hold the output dir (`trainers.run_lock`), and the output dir's previous run must be one this recipe may
continue (`trainers.rerun`). Each worker checks the
same again in `trainers.run.setup_run`; here it fails once, in the process the user started.
"""

from __future__ import annotations

import os
from pathlib import Path

from trainers import rerun, run_lock
from trainers.launchers.commands import launcher_world_size
from trainers.recipe.checks import check_data_paths
from trainers.recipe.config import Recipe
from trainers.recipe.resolved import ResolvedRecipe, resolve_recipe


def check_before_training(recipe: Recipe | ResolvedRecipe) -> bool:
    """Raise for missing data or a refused rerun; True when the run there is already complete (said on rank 0)."""
    resolved = resolve_recipe(recipe)
    recipe = resolved.recipe
    check_data_paths(resolved)
    if int(os.environ.get("RANK", "0")) == 0:  # the other ranks of a launch: their rank 0 may hold it already
        run_lock.check_free(Path(recipe.resolved_output_dir()))  # another run there: say so before any launch
    decision = rerun.decide(recipe, Path(recipe.resolved_output_dir()), launcher_world_size(recipe.launch))
    if decision.action != "complete":
        return False
    if int(os.environ.get("RANK", "0")) == 0:
        print(decision.reason, flush=True)
    return True
