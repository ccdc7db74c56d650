"""The public recipe API: `from trainers.recipe import Recipe, Freeze, CaptionData, load_recipe, ...`.

Nothing here imports torch, so parsing and validating a recipe stays fast.

Each name is resolved from its home module on first use (PEP 562 `__getattr__`), like the family and task
registries resolve their entries. Why: the data classes live with their tasks and `load_recipe` validates
against the registries (a higher floor), while the low-floor modules that read `trainers.recipe.config`
also run this `__init__`; an eager re-export would make every one of them import the tasks and the loader.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(("Augment", "ColorJitter", "RandomResizedCrop"), "trainers.data.augment_config"),
    **dict.fromkeys(
        (
            "CompositeMetric",
            "EarlyStopping",
            "Freeze",
            "Launch",
            "Lora",
            "Model",
            "ParamGroup",
            "Recipe",
            "Reporting",
            "Slurm",
            "Stage",
            "Training",
            "Unfreeze",
            "mean",
        ),
        "trainers.recipe.config",
    ),
    "load_recipe": "trainers.recipe.loading",
    "MixSource": "trainers.data.mix_config",
    **dict.fromkeys(("apply_overrides", "parse_override"), "trainers.recipe.overrides"),
    **dict.fromkeys(
        ("CaptionData", "CaptionEval", "CaptionSplit", "Evaluation"), "trainers.tasks.captioning.config"
    ),
    **dict.fromkeys(("ClassificationData", "ClassificationEval"), "trainers.tasks.classification.config"),
    **dict.fromkeys(("DetectionData", "DetectionEval"), "trainers.tasks.detection.config"),
    **dict.fromkeys(("RetrievalData", "RetrievalEval"), "trainers.tasks.retrieval.config"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # resolved once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
