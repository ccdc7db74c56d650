"""Recipe configuration: typed dataclasses, loading a recipe file, `key=value` overrides.

Nothing here imports torch, so parsing and validating a recipe stays fast.
"""

from trainers.recipe.config import (
    CaptionData,
    CompositeMetric,
    EarlyStopping,
    Evaluation,
    Freeze,
    Launch,
    Lora,
    Model,
    ParamGroup,
    Recipe,
    Reporting,
    Slurm,
    Stage,
    Training,
    Unfreeze,
    mean,
)
from trainers.recipe.loading import load_recipe
from trainers.recipe.overrides import apply_overrides, parse_override

__all__ = [
    "CaptionData",
    "CompositeMetric",
    "EarlyStopping",
    "Evaluation",
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
    "apply_overrides",
    "load_recipe",
    "mean",
    "parse_override",
]
