"""Box metrics shared by every task that predicts boxes (DETR detection, Florence-2 OD / grounding / dense
region captions): COCO mAP through pycocotools, and one-to-one match recall.

torchmetrics' `MeanAveragePrecision` needs torchvision, which this project does not install; pycocotools'
`COCOeval` needs only numpy, and it is the implementation the published COCO numbers come from. Boxes are
x1, y1, x2, y2 in absolute pixels everywhere in this module; the conversion to COCO's x, y, w, h happens here.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

# Per-class AP keys: `ap_<class name>` (mAP@[.5:.95] of that class alone).
CLASS_AP_PREFIX = "ap_"
MAP_METRICS = ("map", "map_50", "map_75")


@dataclass
class ImageBoxes:
    """The boxes of one image: ground truth (`scores` None) or predictions (one score per box)."""

    boxes: list[list[float]]
    labels: list[int]
    width: int
    height: int
    scores: list[float] | None = None
    # Ground truth only: COCO's crowd flag per box (a crowd region is neither a hit nor a miss).
    iscrowd: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.boxes) != len(self.labels):
            raise ValueError(f"{len(self.boxes)} boxes but {len(self.labels)} labels")
        if self.scores is not None and len(self.scores) != len(self.boxes):
            raise ValueError(f"{len(self.boxes)} boxes but {len(self.scores)} scores")


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in `a` (N, 4) with every box in `b` (M, 4), xyxy: an (N, M) array."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def match_recall(
    pred_boxes: Sequence[Sequence[float]], true_boxes: Sequence[Sequence[float]], iou_threshold: float = 0.5
) -> float:
    """Fraction of true boxes matched one-to-one (greedily, highest IoU first) by a prediction with
    IoU >= threshold. Used for phrase grounding, where a phrase is found or not and scores are absent."""
    if len(true_boxes) == 0:
        return math.nan
    if len(pred_boxes) == 0:
        return 0.0
    iou = box_iou(np.asarray(pred_boxes), np.asarray(true_boxes))
    pairs = sorted(
        ((iou[p, t], p, t) for p in range(iou.shape[0]) for t in range(iou.shape[1])), reverse=True
    )
    used_pred: set[int] = set()
    used_true: set[int] = set()
    for value, p, t in pairs:
        if value < iou_threshold:
            break
        if p in used_pred or t in used_true:
            continue
        used_pred.add(p)
        used_true.add(t)
    return len(used_true) / len(true_boxes)


def _coco_dicts(
    predictions: Sequence[ImageBoxes], targets: Sequence[ImageBoxes], class_names: Sequence[str]
) -> tuple[dict, list[dict]]:
    """COCO ground-truth dataset and result list; image ids 1..N, category ids label + 1."""
    images, annotations, results = [], [], []
    for image_id, (pred, true) in enumerate(zip(predictions, targets, strict=True), start=1):
        images.append({"id": image_id, "width": int(true.width), "height": int(true.height)})
        crowd = true.iscrowd or [0] * len(true.boxes)
        for (x1, y1, x2, y2), label, is_crowd in zip(true.boxes, true.labels, crowd, strict=True):
            w, h = float(x2 - x1), float(y2 - y1)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(label) + 1,
                    "bbox": [float(x1), float(y1), w, h],
                    "area": w * h,
                    "iscrowd": int(is_crowd),
                }
            )
        if pred.scores is None:
            raise ValueError(f"prediction {image_id - 1} has no scores")
        for (x1, y1, x2, y2), label, score in zip(pred.boxes, pred.labels, pred.scores, strict=True):
            results.append(
                {
                    "image_id": image_id,
                    "category_id": int(label) + 1,
                    "score": float(score),
                    "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
                }
            )
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(class_names)]
    return {"images": images, "annotations": annotations, "categories": categories}, results


def coco_box_metrics(
    predictions: Sequence[ImageBoxes], targets: Sequence[ImageBoxes], class_names: Sequence[str]
) -> dict[str, float]:
    """mAP@[.5:.95] (`map`), mAP@0.5 (`map_50`), mAP@0.75 (`map_75`) and `ap_<class>` per class, from
    pycocotools' COCOeval (iouType "bbox", 101-point interpolation, up to 100 detections per image).

    A class with no ground truth in the set has no AP (nan), as COCOeval's -1 means; with no prediction at
    all, every AP is 0 where there is ground truth (COCOeval itself cannot take an empty result list).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} predictions for {len(targets)} images")
    dataset, results = _coco_dicts(predictions, targets, class_names)
    present = {a["category_id"] for a in dataset["annotations"] if not a["iscrowd"]}
    if not results:
        value = 0.0 if present else math.nan
        out = dict.fromkeys(MAP_METRICS, value)
        out.update(
            {
                f"{CLASS_AP_PREFIX}{name}": (0.0 if i + 1 in present else math.nan)
                for i, name in enumerate(class_names)
            }
        )
        return out
    with contextlib.redirect_stdout(io.StringIO()):  # COCO() and COCOeval print progress lines
        truth = COCO()
        truth.dataset = dataset
        truth.createIndex()
        detections = truth.loadRes(results)
        evaluator = COCOeval(truth, detections, iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = [math.nan if s < 0 else float(s) for s in evaluator.stats[:3]]
    out = dict(zip(MAP_METRICS, stats, strict=True))
    # precision: [iou thresholds, recall points, categories, area ranges, max dets]; area "all", 100 dets.
    precision = evaluator.eval["precision"][:, :, :, 0, -1]
    for k, category_id in enumerate(evaluator.params.catIds):
        values = precision[:, :, k]
        values = values[values > -1]
        out[f"{CLASS_AP_PREFIX}{class_names[category_id - 1]}"] = (
            float(values.mean()) if values.size else math.nan
        )
    return out
