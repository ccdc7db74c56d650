"""Prompted-generation scoring (Florence-2 style): generations → labelled boxes (the processor's `post_process_generation`), malformed
outputs counted, and the scores: box mAP (pycocotools, `trainers.metrics.boxes`), grounding phrase recall at
IoU 0.5, dense-region box mAP and the caption metrics of the matched regions.

What is written here by hand: the malformed check (the native parser silently drops what it cannot read, so a
strict parse of the same text says whether anything was dropped), the one-to-one matching of dense regions
for their captions (the same greedy IoU matching as `match_recall`), and the no-model baseline.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trainers.metrics.boxes import ImageBoxes, box_iou, coco_box_metrics, match_recall
from trainers.tasks.prompted_generation.loc import SuffixError, parse_suffix, strip_wrappers

OD, DENSE, GROUNDING = "<OD>", "<DENSE_REGION_CAPTION>", "<CAPTION_TO_PHRASE_GROUNDING>"
REGION = "region"  # the one class of the class-agnostic dense-region mAP


@dataclass
class Prediction:
    """One generation, parsed: `boxes` in pixels with their `labels`; `malformed` when the text did not parse
    strictly (or was cut at max_new_tokens) and the native parser may have dropped parts of it."""

    task: str
    text: str
    boxes: list[list[float]] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    malformed: bool = False
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "text": self.text,
            "boxes": self.boxes,
            "labels": self.labels,
            "malformed": self.malformed,
            "reason": self.reason,
        }


def parse_generation(processor: Any, text: str, task: str, size: tuple[int, int]) -> dict[str, Any]:
    """`post_process_generation` of one decoded generation (`skip_special_tokens=False`), never raising; a
    plain dict (`Prediction.to_dict()`): predictions are gathered across ranks and saved with checkpoints."""
    parsed = processor.post_process_generation(text, task=task, image_size=size)[task]
    boxes = [[float(v) for v in b] for b in parsed.get("bboxes", [])]
    labels = [str(label) for label in parsed.get("labels", [])]
    body = text.replace("<pad>", "").strip()
    reason = ""
    if not body.endswith("</s>") or body == "</s>":
        reason = "truncated: no end-of-sequence token (raise evaluation.max_new_tokens)"
    elif strip_wrappers(body):
        try:
            parse_suffix(body)
        except SuffixError as error:
            reason = str(error)
    return Prediction(task, text, boxes, labels, bool(reason), reason).to_dict()


# ------------------------------------------------------------------------------------------- scoring


def _matched_pairs(
    pred: Sequence[Sequence[float]], true: Sequence[Sequence[float]], threshold: float = 0.5
) -> list[tuple[int, int]]:
    """One-to-one (prediction, truth) pairs, highest IoU first, IoU >= threshold."""
    if not pred or not true:
        return []
    iou = box_iou(np.asarray(pred), np.asarray(true))
    pairs = sorted(
        ((iou[p, t], p, t) for p in range(iou.shape[0]) for t in range(iou.shape[1])), reverse=True
    )
    used_p: set[int] = set()
    used_t: set[int] = set()
    out = []
    for value, p, t in pairs:
        if value < threshold:
            break
        if p not in used_p and t not in used_t:
            used_p.add(p)
            used_t.add(t)
            out.append((p, t))
    return out


def od_metrics(items: Sequence[tuple[dict[str, Any], Any]], classes: Sequence[str]) -> dict[str, float]:
    """mAP, mAP@0.5, mAP@0.75 and ap_<class>; predicted labels outside `classes` count as false positives of
    no class (they are dropped: COCO has no category for them). Florence gives no scores: all 1.0."""
    index = {name: i for i, name in enumerate(classes)}
    preds, truths = [], []
    for prediction, sample in items:
        kept = [
            (b, index[label])
            for b, label in zip(prediction["boxes"], prediction["labels"], strict=True)
            if label in index
        ]
        preds.append(
            ImageBoxes([b for b, _ in kept], [c for _, c in kept], *sample.size, scores=[1.0] * len(kept))
        )
        true = sample.boxes()
        truths.append(ImageBoxes([b for _, b in true], [index[label] for label, _ in true], *sample.size))
    return coco_box_metrics(preds, truths, classes)


def grounding_recall(items: Sequence[tuple[dict[str, Any], Any]], threshold: float = 0.5) -> float:
    """Fraction of true (phrase, box) pairs found: per phrase, predicted boxes of that phrase matched one-to-one."""
    found, total = 0.0, 0
    for prediction, sample in items:
        by_phrase: dict[str, list[list[int]]] = {}
        for label, box in sample.boxes():
            by_phrase.setdefault(label, []).append(box)
        for phrase, true in by_phrase.items():
            pred = [
                b
                for b, label in zip(prediction["boxes"], prediction["labels"], strict=True)
                if label == phrase
            ]
            found += match_recall(pred, true, threshold) * len(true)
            total += len(true)
    return found / total if total else math.nan


def dense_metrics(items: Sequence[tuple[dict[str, Any], Any]], scorer: Any) -> dict[str, float]:
    """Class-agnostic box mAP of the regions, the fraction of true regions matched (IoU 0.5, one-to-one), and the
    caption metrics of the matched regions' descriptions (predicted vs true)."""
    preds, truths = [], []
    captions: dict[str, str] = {}
    references: dict[str, list[str]] = {}
    matched, total = 0, 0
    for n, (prediction, sample) in enumerate(items):
        true = sample.boxes()
        preds.append(
            ImageBoxes(
                prediction["boxes"],
                [0] * len(prediction["boxes"]),
                *sample.size,
                scores=[1.0] * len(prediction["boxes"]),
            )
        )
        truths.append(ImageBoxes([b for _, b in true], [0] * len(true), *sample.size))
        for p, t in _matched_pairs(prediction["boxes"], [b for _, b in true]):
            captions[f"{n}-{t}"] = prediction["labels"][p]
            references[f"{n}-{t}"] = [true[t][0]]
        matched += len(_matched_pairs(prediction["boxes"], [b for _, b in true]))
        total += len(true)
    boxes = coco_box_metrics(preds, truths, [REGION])
    out = {
        "dense_map": boxes["map"],
        "dense_map_50": boxes["map_50"],
        "dense_region_recall": matched / total if total else math.nan,
    }
    names = scorer.metrics if scorer is not None else ()
    scores = (
        scorer.score(captions, references) if captions and scorer is not None else dict.fromkeys(names, 0.0)
    )
    out.update({f"dense_{k}": float(v) for k, v in scores.items()})
    return out


def score_all(
    predictions: Mapping[int, dict[str, Any]], samples: Sequence[Any], classes: Sequence[str], scorer: Any
) -> dict[str, float]:
    """Every metric of the task over a whole set; a task absent from the set gives nan for its metrics."""
    by_task: dict[str, list[tuple[dict[str, Any], Any]]] = {OD: [], DENSE: [], GROUNDING: []}
    for index, prediction in predictions.items():
        by_task[samples[index].task].append((prediction, samples[index]))
    out: dict[str, float] = {}
    if by_task[OD]:
        out.update(od_metrics(by_task[OD], classes))
    else:
        out.update({k: math.nan for k in ("map", "map_50", "map_75")})
    out["grounding_recall"] = grounding_recall(by_task[GROUNDING]) if by_task[GROUNDING] else math.nan
    if by_task[DENSE]:
        out.update(dense_metrics(by_task[DENSE], scorer))
    out["malformed_rate"] = sum(p["malformed"] for p in predictions.values()) / max(1, len(predictions))
    return out


# ------------------------------------------------------------------------------------------ baseline


@dataclass
class MeanBoxBaseline:
    """What a detector that ignores the image scores: every val image gets, for each training class, that
    class's mean training box (relative to the image size), and every grounding phrase its class's mean box."""

    metrics: dict[str, float]
    boxes: dict[str, list[float]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "mean training box per class, for every image",
            **self.metrics,
            "relative_boxes": self.boxes,
        }

    def render(self) -> str:
        shown = ", ".join(f"{k}={v:.3f}" for k, v in self.metrics.items() if not math.isnan(v))
        return f"baseline:      the mean training box of every class on every image: {shown}"


def mean_boxes(train: Sequence[Any]) -> dict[str, list[float]]:
    sums: dict[str, list[np.ndarray]] = {}
    for sample in train:
        if sample.task != OD:
            continue
        w, h = sample.size
        for label, (x1, y1, x2, y2) in sample.boxes():
            sums.setdefault(label, []).append(np.array([x1 / w, y1 / h, x2 / w, y2 / h]))
    return {label: np.mean(rows, axis=0).tolist() for label, rows in sums.items()}


def baseline_predictions(
    boxes: Mapping[str, Sequence[float]], samples: Sequence[Any]
) -> dict[int, dict[str, Any]]:
    out = {}
    for i, sample in enumerate(samples):
        w, h = sample.size
        labels = list(boxes) if sample.task == OD else [g.label for g in sample.groups]
        rel = [boxes.get(label, [0.0, 0.0, 1.0, 1.0]) for label in labels]
        out[i] = Prediction(
            sample.task, "", [[r[0] * w, r[1] * h, r[2] * w, r[3] * h] for r in rel], labels
        ).to_dict()
    return out
