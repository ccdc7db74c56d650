"""Recipe checks that need more than the recipe itself: the task's metric names, the data on disk.

Both run at recipe load / before any model is loaded, so a typo or a missing folder fails in the first
second (and in `--dry-run`) instead of after a download or an epoch of training.
"""

from __future__ import annotations

import difflib
import importlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from trainers.errors import RecipeError
from trainers.recipe.config import CaptionData, CompositeMetric, Recipe

logger = logging.getLogger(__name__)

# task -> "module:attribute" holding its metric names (the one list each task keeps).
TASK_METRIC_NAMES = {
    "captioning": "trainers.tasks.captioning.metrics:SUPPORTED_METRICS",
}
ALWAYS_AVAILABLE = ("loss",)  # the Trainer's eval loss, for early stopping


def task_metric_names(task: str) -> tuple[str, ...]:
    """The metric names `task` computes (imports only the task's metrics module)."""
    module, _, attr = TASK_METRIC_NAMES[task].partition(":")
    return tuple(getattr(importlib.import_module(module), attr))


def check_metric_names(recipe: Recipe, supported: Sequence[str]) -> None:
    """`evaluation.metrics` and every part of `early_stopping.metric` must name metrics the task computes."""
    listed = ", ".join(supported)
    metrics = tuple(recipe.evaluation.metrics or ())
    if not metrics:
        raise RecipeError(f"evaluation.metrics is empty; name at least one of {listed} (e.g. evaluation.metrics={supported[0]}).")
    for name in metrics:
        if name not in supported:
            fixed = [_closest(n, supported) or n if n not in supported else n for n in metrics]
            example = ",".join(n for n in fixed if n in supported) or supported[0]
            raise RecipeError(
                f"evaluation.metrics: {name!r} is not a metric this task computes{_did_you_mean(name, supported)}; "
                f"supported: {listed}. Fix evaluation.metrics in the recipe or override it, e.g. "
                f"evaluation.metrics={example}."
            )
    es = recipe.early_stopping
    if es is None:
        return
    parts = es.metric.parts if isinstance(es.metric, CompositeMetric) else (es.metric,)
    where = f"early_stopping.metric ({es.metric.name} = mean of {list(parts)})" if isinstance(
        es.metric, CompositeMetric) else "early_stopping.metric"
    known = (*supported, *ALWAYS_AVAILABLE)
    for part in parts:
        name = part.removeprefix("eval_")
        if name not in known:
            raise RecipeError(
                f"{where} uses {part!r}, which evaluation does not produce: it is not a metric this task computes"
                f"{_did_you_mean(name, known)}; supported: {listed}, or loss. Fix it in the recipe (it must "
                f"also be listed in evaluation.metrics, now {','.join(metrics)})."
            )
        if name not in (*metrics, *ALWAYS_AVAILABLE):
            raise RecipeError(
                f"{where} uses {part!r}, which evaluation does not produce: evaluation.metrics is "
                f"{','.join(metrics)}. Add it there (evaluation.metrics={','.join((*metrics, name))}) or watch "
                f"one of {', '.join((*metrics, *ALWAYS_AVAILABLE))}."
            )


def missing_data_paths(data: CaptionData) -> list[str]:
    """`key 'path' (what)` for each data path that does not exist, in recipe order."""
    wanted = [("data.train", data.train, "caption file"), ("data.val", data.val, "caption file"),
              ("data.images", data.images, "image directory")]
    if data.val_images:
        wanted.append(("data.val_images", data.val_images, "image directory"))
    missing = []
    for key, path, what in wanted:
        exists = Path(path).is_dir() if what == "image directory" else Path(path).is_file()
        if not exists:
            missing.append(f"{key} {path!r} ({what})")
    return missing


def check_data_paths(recipe: Recipe, warn_only: bool = False) -> list[str]:
    """Stop (or, for a dry-run, warn) when a caption file or image folder is missing: before any model load.

    A dry-run only warns: it is how a recipe is inspected before its data exists (and on another machine).
    """
    data = recipe.data
    if not isinstance(data, CaptionData):
        return []
    missing = missing_data_paths(data)
    if not missing:
        return []
    message = data_paths_message(recipe, missing)
    if warn_only:
        logger.warning("%s", message)
        return missing
    raise RecipeError(message)


def data_paths_message(recipe: Recipe, missing: list[str]) -> str:
    data = recipe.data
    relative = any(not os.path.isabs(p) for p in (data.train, data.val, data.images))
    where = f" (relative paths are read from {os.getcwd()})" if relative else ""
    model = "" if recipe.model.use_demo_model else f" Checked before the model {recipe.model.id} is loaded or downloaded."
    return (
        f"Data not found{where}: {'; '.join(missing)}.{model} Fix the captions path and the image "
        f"directory: {data.train} and {data.val} each map image file names to a caption or a list of captions, "
        'as a JSON object such as {"0001.jpg": "a dog runs along the beach"} or as JSONL, one '
        '{"image": "0001.jpg", "caption": "a dog runs along the beach"} per line; the images go in '
        f"{data.images}/. Put your files there or point data.train=, data.val= and data.images= at them. "
        "`--demo` trains a tiny model offline on the shipped sample set (data/shapes)."
    )


def _closest(name: str, options: Sequence[str]) -> str | None:
    close = difflib.get_close_matches(name, options, n=1, cutoff=0.5)
    return close[0] if close else None


def _did_you_mean(name: str, options: Sequence[str]) -> str:
    close = _closest(name, options)
    return f" (did you mean {close!r}?)" if close else ""
