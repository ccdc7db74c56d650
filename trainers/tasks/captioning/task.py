"""Captioning task parts from a recipe: `{filename: caption}` JSON + image folder, BLIP-style collation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch.utils.data import Subset

from trainers.errors import RecipeError
from trainers.recipe.config import CaptionData, Recipe
from trainers.tasks.base import TaskParts
from trainers.tasks.captioning.data import CaptionCollator, CaptionJsonDataset
from trainers.tasks.captioning.evaluation import CaptionEvaluator


def build_captioning_task(recipe: Recipe, processor: Any) -> TaskParts:
    data = recipe.data
    if not isinstance(data, CaptionData):
        raise RecipeError(f"the captioning task needs data=CaptionData(...), got {type(data).__name__}.")
    policy = data.on_bad_sample
    train = CaptionJsonDataset(Path(data.train), Path(data.images), processor.image_processor, policy)
    val = CaptionJsonDataset(Path(data.val), Path(data.val_images or data.images), processor.image_processor, policy)
    if data.max_val_samples is not None:
        val = _truncate(val, data.max_val_samples)
    train_set = Subset(train, range(min(len(train), data.max_train_samples))) if data.max_train_samples else train
    tokenizer = processor.tokenizer
    collator = CaptionCollator(tokenizer, max_length=data.max_length)
    batch_size = recipe.evaluation.batch_size or recipe.training.eval_batch_size or recipe.training.batch_size
    evaluator = CaptionEvaluator(
        val,
        CaptionCollator(tokenizer, max_length=data.max_length, include_index=True),
        processor,
        recipe.evaluation,
        batch_size=batch_size,
    )
    return TaskParts(train_dataset=train_set, eval_dataset=val, data_collator=collator, evaluator=evaluator)


def _truncate(dataset: CaptionJsonDataset, n: int) -> CaptionJsonDataset:
    """Keep the first `n` items (the evaluator needs the dataset type for references and file names)."""
    dataset.filenames = dataset.filenames[:n]
    dataset._captions = dataset._captions[:n]
    return dataset
