"""Shared fixtures: the tiny BLIP, the shipped shapes captions, a small recipe for fast runs."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHAPES = ROOT / "data" / "shapes"

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(ROOT / ".cache" / "torch_extensions"))
logging.getLogger("bitsandbytes").setLevel(logging.ERROR)


@pytest.fixture(scope="session")
def shapes_dir() -> Path:
    assert (SHAPES / "train.json").is_file(), "the shipped sample set data/shapes is missing"
    return SHAPES


def tiny_recipe(output_dir: Path, **training):
    """A fast captioning recipe on the shipped shapes data (few images, tiny model)."""
    from trainers.models.blip import TinyBlipSpec
    from trainers.recipe import CaptionData, Evaluation, Model, Recipe, Reporting, Training

    settings = dict(epochs=2, batch_size=8, lr=1e-3, warmup_steps=0, weight_decay=0.01, logging_steps=1,
                    resume="never")
    settings.update(training)
    return Recipe(
        name="tiny",
        model=Model(id="tiny", family="blip-captioning", demo=TinyBlipSpec(), use_demo_model=True),
        data=CaptionData(
            train=str(SHAPES / "train.json"),
            val=str(SHAPES / "val.json"),
            images=str(SHAPES / "images"),
            max_train_samples=32,
            max_val_samples=8,
        ),
        training=Training(**settings),
        evaluation=Evaluation(metrics=("rouge_l",), num_beams=2, max_length=12, batch_size=8),
        reporting=Reporting(wandb=False, plots=False),
        output_dir=str(output_dir),
    )
