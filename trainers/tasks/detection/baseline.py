"""The mean-box baseline: what a detector that ignores the pixels scores.

For every validation image it predicts, for each class, that class's mean training box (normalised by the
image size, so it scales to any image), score 1. Scored by the same pycocotools evaluation as the model, it
is the prior a trained detector must beat: on data whose objects sit near the centre it is not zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from trainers.metrics.boxes import ImageBoxes, coco_box_metrics


@dataclass(frozen=True)
class MeanBoxBaseline:
    scores: dict[str, float]
    train_boxes: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "baseline": "mean training box per class, every image",
            "train_boxes": self.train_boxes,
            **self.scores,
        }

    def render(self) -> str:
        return (
            f"baseline:      mean training box per class on every val image: map={self.scores['map']:.3f}, "
            f"map_50={self.scores['map_50']:.3f}"
        )


def mean_boxes(images: Sequence[Any], num_classes: int) -> np.ndarray:
    """(C, 4) mean normalised xyxy box per class (NaN rows for a class without boxes)."""
    sums, counts = np.zeros((num_classes, 4)), np.zeros(num_classes)
    for image in images:
        scale = np.array([image.width, image.height, image.width, image.height], dtype=np.float64)
        for box, label in zip(image.boxes, image.labels, strict=True):
            sums[label] += box / scale
            counts[label] += 1
    with np.errstate(invalid="ignore"):
        return sums / counts[:, None]


def mean_box_baseline(
    train_images: Sequence[Any],
    val_images: Sequence[Any],
    classes: Sequence[str],
    targets: Sequence[ImageBoxes],
) -> MeanBoxBaseline:
    prior = mean_boxes(train_images, len(classes))
    present = [c for c in range(len(classes)) if not np.isnan(prior[c]).any()]
    predictions = []
    for image in val_images:
        scale = np.array([image.width, image.height, image.width, image.height], dtype=np.float64)
        predictions.append(
            ImageBoxes(
                [list(prior[c] * scale) for c in present],
                present,
                image.width,
                image.height,
                scores=[1.0] * len(present),
            )
        )
    scores = coco_box_metrics(predictions, targets, classes)
    return MeanBoxBaseline(scores, sum(len(i.labels) for i in train_images))
