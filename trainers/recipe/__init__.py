"""Recipe configuration: typed dataclasses, loading a recipe file, `key=value` overrides.

Nothing here imports torch, so parsing and validating a recipe stays fast.
"""

from trainers.data.augment import Augment, ColorJitter, RandomResizedCrop  # shared by every task's data
from trainers.recipe.config import (
    CompositeMetric,
    EarlyStopping,
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
from trainers.tasks.captioning.config import (  # the first task's, for recipes
    CaptionData,
    CaptionEval,
    CaptionSplit,
    Evaluation,
)
from trainers.tasks.classification.config import ClassificationData, ClassificationEval
from trainers.tasks.detection.config import DetectionData, DetectionEval
from trainers.tasks.retrieval.config import RetrievalData, RetrievalEval

__all__ = [
    "Augment",
    "CaptionData",
    "CaptionEval",
    "CaptionSplit",
    "ClassificationData",
    "ClassificationEval",
    "ColorJitter",
    "CompositeMetric",
    "DetectionData",
    "DetectionEval",
    "EarlyStopping",
    "Evaluation",
    "Freeze",
    "Launch",
    "Lora",
    "Model",
    "ParamGroup",
    "RandomResizedCrop",
    "Recipe",
    "Reporting",
    "RetrievalData",
    "RetrievalEval",
    "Slurm",
    "Stage",
    "Training",
    "Unfreeze",
    "apply_overrides",
    "load_recipe",
    "mean",
    "parse_override",
]
