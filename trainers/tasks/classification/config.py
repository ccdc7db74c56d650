"""Recipe dataclasses of the image-classification task (no torch import: recipes load fast)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from trainers.data.source_config import DatasetSource
from trainers.data.split_config import AugmentableSplitData, DataPath

CLASS_PREFIX = "class_accuracy/"  # per-class accuracy metrics: class_accuracy/<class name>


@dataclass
class ClassificationEval:
    """Evaluation settings: batch size (default: the training eval batch) and the confusion-matrix plot."""

    batch_size: int | None = None
    confusion_matrix: bool = True


@dataclass
class ClassificationData(AugmentableSplitData):
    """Labelled images, per split either an image folder or a list file.

    An image folder holds one subfolder per class (`train/cat/001.png`); a list file is a CSV with an
    `image,label` header or a JSONL of `{"image": ..., "label": ...}` lines, image paths relative to
    `images` (default: the list file's folder). The classes are `labels` when given, in that order,
    otherwise the train split's class folders / labels, sorted; their names become the model config's
    `id2label`. `num_labels`, when given, must equal the number of classes found. `extra_val` names
    further validation sets (metric prefix = its key); `test` is evaluated once, at the end.
    `augment` (`trainers.data.augment.Augment`: random resized crop, flip, rotation, colour jitter) applies to
    the training split only, seeded by (training.seed, epoch, image index), so 2 ranks, a resumed run and an
    uninterrupted one see the same pixels. `on_bad_sample` ("fail" | "skip") decides what a missing or
    unreadable image or a malformed list line does (see trainers/data_policy.py). Any split may instead be a
    `DatasetSource` (a `datasets` dataset saved to disk, on the Hub, or an imagefolder / JSON / CSV directory)
    with its image and label columns mapped; a ClassLabel column's names become the classes.
    """

    task: ClassVar[str] = "classification"
    eval_config: ClassVar[type] = ClassificationEval
    data_paths: ClassVar[tuple[DataPath, ...]] = (
        DataPath("train", "image folder or list file", "any"),
        DataPath("val", "image folder or list file", "any"),
        DataPath("test", "image folder or list file", "any"),
        DataPath("extra_val", "image folder or list file", "any"),
        DataPath("images", "image directory", "dir"),
    )
    describing_fields: ClassVar[tuple[str, ...]] = ("labels", "num_labels")
    missing_hint: ClassVar[str] = (
        "Each split is an image folder with one subfolder per class (train/cat/001.png) or a CSV (image,label "
        'header) / JSONL ({"image": ..., "label": ...}) list; point data.train=, data.val= at yours. `--demo` '
        "trains on the shipped data/tiny_classes."
    )

    train: str | DatasetSource
    val: str | DatasetSource
    test: str | DatasetSource | None = None
    extra_val: dict[str, str | DatasetSource] = field(default_factory=dict)
    labels: tuple[str, ...] | None = None
    num_labels: int | None = None
