"""Captioning task parts from a recipe: `{filename: caption}` JSON + image folder, BLIP-style collation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainers.errors import RecipeError
from trainers.recipe.config import CaptionData, Recipe
from trainers.tasks.base import TaskParts
from trainers.tasks.captioning.baseline import recipe_composites
from trainers.tasks.captioning.data import CaptionCollator, CaptionJsonDataset
from trainers.tasks.captioning.evaluation import CaptionEvaluator


def build_captioning_task(recipe: Recipe, processor: Any) -> TaskParts:
    data = recipe.data
    if not isinstance(data, CaptionData):
        raise RecipeError(f"the captioning task needs data=CaptionData(...), got {type(data).__name__}.")
    policy = data.on_bad_sample
    images = processor.image_processor
    train = CaptionJsonDataset(Path(data.train), Path(data.images), images, policy, limit=data.max_train_samples)
    val = CaptionJsonDataset(
        Path(data.val), Path(data.val_images or data.images), images, policy, limit=data.max_val_samples
    )
    tokenizer = processor.tokenizer
    collator = CaptionCollator(tokenizer, max_length=data.max_length)
    batch_size = recipe.evaluation.batch_size or recipe.training.eval_batch_size or recipe.training.batch_size
    evaluator = CaptionEvaluator(
        val,
        CaptionCollator(tokenizer, max_length=data.max_length, include_index=True),
        processor,
        recipe.evaluation,
        batch_size=batch_size,
        train_captions=[captions[0] for captions in train.references],  # the captions that train
        composites=recipe_composites(recipe),
    )
    return TaskParts(train_dataset=train, eval_dataset=val, data_collator=collator, evaluator=evaluator)

