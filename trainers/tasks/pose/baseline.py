"""The mean-pose baseline: what a keypoint model that ignores the pixels scores.

For every validation instance it predicts the mean training pose placed in the instance's box (each
keypoint's mean position relative to the box, x / width and y / height, over the training instances where it
is labelled). Scored by the same PCK, pixel error and OKS AP as the model, it is the prior a trained model
must beat: for people standing upright in their boxes it is far from zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class MeanPoseBaseline:
    scores: dict[str, float]
    train_instances: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "baseline": "mean training pose in each val box",
            "train_instances": self.train_instances,
            **self.scores,
        }

    def render(self) -> str:
        return (
            f"baseline:      mean training pose in every val box: pck={self.scores['pck']:.3f}, "
            f"oks_ap={self.scores['oks_ap']:.3f}, mean_pixel_error={self.scores['mean_pixel_error']:.2f}"
        )


def mean_pose(records: Sequence[Any], count: int) -> np.ndarray:
    """(K, 2) mean box-relative keypoint positions (0.5, 0.5: the centre, for a keypoint never labelled)."""
    sums, counts = np.zeros((count, 2)), np.zeros(count)
    for record in records:
        x, y, w, h = record.box
        labelled = record.keypoints[:, 2] > 0
        rel = (record.keypoints[:, :2] - [x, y]) / [w, h]
        sums[labelled] += rel[labelled]
        counts[labelled] += 1
    mean = np.full((count, 2), 0.5)
    seen = counts > 0
    mean[seen] = sums[seen] / counts[seen, None]
    return mean


def place(mean: np.ndarray, box: Sequence[float]) -> np.ndarray:
    x, y, w, h = box
    return mean * [w, h] + [x, y]


def mean_pose_baseline(train: Sequence[Any], val: Sequence[Any], score: Any) -> MeanPoseBaseline:
    """`score(list of (K, 2) predictions in image pixels) -> metrics`, the task's own scorer."""
    count = len(val[0].keypoints)
    prior = mean_pose(train, count)
    return MeanPoseBaseline(score([place(prior, r.box) for r in val]), len(train))
