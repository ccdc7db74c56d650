"""The recipe side of a Hugging Face `datasets` source (no torch, no `datasets` import: recipes load fast).

A task's data split (`data.train`, `data.val`, an extra validation set, the test split) is either the
task's own files or a `DatasetSource`; `trainers.data.sources.load_source` reads it when the run starts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from trainers.errors import RecipeError

SourceKind = Literal["disk", "hub", "imagefolder", "json", "csv"]
BoxFormat = Literal["xywh", "xyxy"]
BOX_FORMATS: tuple[str, ...] = ("xywh", "xyxy")


@dataclass
class Columns:
    """Task key → dataset column; None means the task does not read that key from this source."""

    image: str | None = "image"
    caption: str | None = None
    label: str | None = None
    boxes: str | None = None
    box_labels: str | None = None
    keypoints: str | None = None
    prefix: str | None = None
    suffix: str | None = None
    messages: str | None = None  # chat: a list of {role, content} turns per row

    def mapped(self) -> dict[str, str]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name)}


@dataclass
class DatasetSource:
    """One split of a `datasets` dataset, and which of its columns the task reads."""

    kind: SourceKind
    path: str  # directory (disk / imagefolder / json / csv), a JSON/CSV file, or a Hub dataset name
    split: str = "train"
    columns: Columns = field(default_factory=Columns)
    image_dir: str | None = None  # json / csv: where the image file names point (default: the file's folder)
    image_mode: str | None = "RGB"  # PIL mode the images are converted to on access (None: as stored)
    streaming: bool = False
    name: str | None = None  # a Hub dataset's configuration (subset)
    revision: str | None = None  # a Hub dataset's branch, tag or commit
    cache_dir: str | None = None  # where load_dataset writes its Arrow cache (default HF_DATASETS_CACHE)
    box_format: BoxFormat = (
        "xywh"  # the boxes column: COCO's x, y, width, height, or corners x0, y0, x1, y1 (pixels)
    )

    def validate(self, key: str) -> None:
        if self.box_format not in BOX_FORMATS:
            raise RecipeError(
                f"{key}.box_format must be xywh (COCO: x, y, width, height) or xyxy (corners x0, y0, x1, y1), "
                f"got {self.box_format!r}."
            )

    def missing_path(self, key: str) -> str | None:
        """`key.path 'path' (what)` when a local source's path does not exist (a Hub name is checked on load)."""
        if self.kind == "hub" or Path(self.path).expanduser().exists():
            return None
        return f"{key}.path {self.path!r} ({self.kind} dataset source)"
