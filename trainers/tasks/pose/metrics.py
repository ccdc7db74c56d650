"""Keypoint metrics: PCK normalised by the box size, mean pixel error, and OKS AP through pycocotools.

PCK@t counts a labelled keypoint as correct when its error is at most t * max(box width, box height) (the
box-size normalisation of mmpose; 0.2 is the usual report). OKS AP is COCOeval with `iouType="keypoints"`
and the skeleton's own `kpt_oks_sigmas` (COCO's 17 by default), so a non-COCO skeleton is scored with the
sigmas its recipe declares.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from trainers.tasks.pose.config import COCO_SIGMAS


@dataclass
class PoseInstance:
    """One person (or object) instance: keypoints (K, 3) of (x, y, visibility) in image pixels, its box
    (x, y, w, h), the image it is on (width, height) and, for predictions, a score."""

    keypoints: np.ndarray
    box: tuple[float, float, float, float]
    image_id: int
    score: float | None = None


def _labelled(truth: PoseInstance) -> np.ndarray:
    return np.asarray(truth.keypoints)[:, 2] > 0


def pck(
    predictions: Sequence[PoseInstance], targets: Sequence[PoseInstance], threshold: float = 0.2
) -> float:
    """Fraction of labelled keypoints within threshold * max(box w, box h) of the truth (NaN if none)."""
    hits = total = 0
    for pred, truth in zip(predictions, targets, strict=True):
        mask = _labelled(truth)
        error = np.linalg.norm(np.asarray(pred.keypoints)[:, :2] - np.asarray(truth.keypoints)[:, :2], axis=1)
        hits += int((error[mask] <= threshold * max(truth.box[2], truth.box[3])).sum())
        total += int(mask.sum())
    return hits / total if total else math.nan


def mean_pixel_error(predictions: Sequence[PoseInstance], targets: Sequence[PoseInstance]) -> float:
    errors = [
        np.linalg.norm(np.asarray(p.keypoints)[m, :2] - np.asarray(t.keypoints)[m, :2], axis=1)
        for p, t in zip(predictions, targets, strict=True)
        if (m := _labelled(t)).any()
    ]
    return float(np.concatenate(errors).mean()) if errors else math.nan


def oks_ap(
    predictions: Sequence[PoseInstance],
    targets: Sequence[PoseInstance],
    sigmas: Sequence[float] = COCO_SIGMAS,
) -> dict[str, float]:
    """`oks_ap` (AP over OKS .50:.95), `oks_ap_50`, `oks_ap_75` from pycocotools (area = box w * h)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    count = len(sigmas)
    images = sorted({t.image_id for t in targets})
    annotations = []
    for i, t in enumerate(targets, start=1):
        kp = np.asarray(t.keypoints, dtype=np.float64)
        if kp.shape != (count, 3):
            raise ValueError(f"target {i - 1} has keypoints of shape {kp.shape}, expected ({count}, 3)")
        annotations.append(
            {
                "id": i,
                "image_id": t.image_id,
                "category_id": 1,
                "bbox": list(map(float, t.box)),
                "area": float(t.box[2] * t.box[3]),
                "iscrowd": 0,
                "keypoints": kp.ravel().tolist(),
                "num_keypoints": int((kp[:, 2] > 0).sum()),
            }
        )
    results = [
        {
            "image_id": p.image_id,
            "category_id": 1,
            "score": float(p.score if p.score is not None else 1.0),
            "keypoints": np.column_stack([np.asarray(p.keypoints)[:, :2], np.ones(count)]).ravel().tolist(),
        }
        for p in predictions
    ]
    if not results:
        return {"oks_ap": 0.0, "oks_ap_50": 0.0, "oks_ap_75": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO()
        truth.dataset = {
            "images": [{"id": i} for i in images],
            "annotations": annotations,
            "categories": [{"id": 1, "name": "instance"}],
        }
        truth.createIndex()
        evaluator = COCOeval(truth, truth.loadRes(results), iouType="keypoints")
        evaluator.params.kpt_oks_sigmas = np.asarray(sigmas, dtype=np.float64)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = [math.nan if s < 0 else float(s) for s in evaluator.stats[:3]]
    return dict(zip(("oks_ap", "oks_ap_50", "oks_ap_75"), stats, strict=True))
