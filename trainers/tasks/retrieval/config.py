"""Recipe dataclasses of the retrieval task (no torch import: recipes load fast)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from trainers.data.source_config import DatasetSource
from trainers.data.split_config import DataPath, SplitData
from trainers.errors import RecipeError


@dataclass
class RetrievalEval:
    """Evaluation settings: batch size (images per batch; default: the training eval batch), the K of R@K, and
    how many text queries `eval/retrieval.png` shows with their top-k images after each evaluation (0: none)."""

    batch_size: int | None = None
    recall_at: tuple[int, ...] = (1, 5, 10)
    plot_queries: int = 6


@dataclass
class RetrievalData(SplitData):
    """Caption–image pairs: per split a JSON file `{image file: [caption, ...]}` (a single caption string is
    accepted too), image paths relative to `images` (default: the JSON file's folder).

    Training draws one of an image's captions per epoch, seeded by (training.seed, epoch, image index): the
    same pairs on any rank, and no image appears twice in a batch (its other captions would be negatives).
    Validation embeds every caption: text→image ranks each caption's image, image→text the best-ranked of
    its captions. `max_train_samples` / `max_val_samples` keep the first N images.

    Either split may instead be a `DatasetSource` of image-text pairs: `columns.caption` holds a caption or
    a list of captions per image row.
    """

    task: ClassVar[str] = "retrieval"
    eval_config: ClassVar[type] = RetrievalEval
    data_paths: ClassVar[tuple[DataPath, ...]] = (
        DataPath("train", "caption file"),
        DataPath("val", "caption file"),
        DataPath("images", "image directory", "dir"),
    )
    missing_hint: ClassVar[str] = (
        'A caption file is a JSON object {"image.png": ["a caption", "another caption"]}; point data.train=, '
        "data.val= (and data.images=) at yours. `--demo` trains on the shipped data/shape_pairs."
    )

    train: str | DatasetSource
    val: str | DatasetSource

    def validate(self) -> None:
        super().validate()
        for key in ("max_train_samples", "max_val_samples"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise RecipeError(f"data.{key} must be >= 1 or none, got {value}.")
