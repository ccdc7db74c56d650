"""The shared box metrics (trainers/metrics/boxes.py) against hand-computed values and against pycocotools
driven independently from JSON files, as a user would run it on exported predictions."""

from __future__ import annotations

import contextlib
import io
import json
import math

import numpy as np
import pytest

from trainers.metrics.boxes import ImageBoxes, box_iou, coco_box_metrics, match_recall

CLASSES = ["wrinkle", "drop", "broken"]


def test_box_iou_of_known_boxes():
    iou = box_iou(np.array([[0, 0, 10, 10], [0, 0, 5, 5]]), np.array([[5, 0, 15, 10], [20, 20, 30, 30]]))
    assert iou[0, 0] == pytest.approx(50 / 150)
    assert iou[0, 1] == 0.0
    assert iou[1, 0] == 0.0  # touching edges only


def test_perfect_predictions_give_map_one():
    truth = [ImageBoxes([[10, 10, 40, 30], [50, 50, 90, 80]], [0, 1], 100, 100)]
    pred = [ImageBoxes([[10, 10, 40, 30], [50, 50, 90, 80]], [0, 1], 100, 100, scores=[0.9, 0.8])]
    m = coco_box_metrics(pred, truth, CLASSES)
    assert m["map"] == pytest.approx(1.0) and m["map_50"] == pytest.approx(1.0)
    assert m["ap_wrinkle"] == pytest.approx(1.0) and m["ap_drop"] == pytest.approx(1.0)
    assert math.isnan(m["ap_broken"])  # no ground truth of that class: no AP, not 0


def test_one_box_at_iou_062_counts_for_three_of_ten_thresholds():
    truth = [ImageBoxes([[0, 0, 100, 100]], [0], 200, 200)]
    # 100 x 62 inside the true box: IoU 0.62, a hit at 0.50, 0.55, 0.60 and a miss from 0.65 on.
    pred = [ImageBoxes([[0, 0, 100, 62]], [0], 200, 200, scores=[0.7])]
    assert box_iou(np.array(pred[0].boxes), np.array(truth[0].boxes))[0, 0] == pytest.approx(0.62)
    m = coco_box_metrics(pred, truth, CLASSES)
    assert m["map_50"] == pytest.approx(1.0)
    assert m["map_75"] == pytest.approx(0.0)
    assert m["map"] == pytest.approx(0.3)


def test_per_class_ap_and_a_wrong_label():
    truth = [ImageBoxes([[0, 0, 20, 20]], [0], 64, 64), ImageBoxes([[30, 30, 60, 60]], [1], 64, 64)]
    # Image 2's box is found but called "wrinkle": a false positive for wrinkle, a miss for drop.
    pred = [
        ImageBoxes([[0, 0, 20, 20]], [0], 64, 64, scores=[0.9]),
        ImageBoxes([[30, 30, 60, 60]], [0], 64, 64, scores=[0.95]),
    ]
    m = coco_box_metrics(pred, truth, CLASSES)
    assert m["ap_drop"] == pytest.approx(0.0)
    # wrinkle: the top-scored detection is the false positive, then the hit: precision 1/2 at recall 1.
    assert m["ap_wrinkle"] == pytest.approx(0.5)
    assert m["map"] == pytest.approx(0.25)


def test_no_predictions_is_zero_not_a_crash():
    truth = [ImageBoxes([[0, 0, 20, 20]], [2], 64, 64)]
    m = coco_box_metrics([ImageBoxes([], [], 64, 64, scores=[])], truth, CLASSES)
    assert m["map"] == 0.0 and m["ap_broken"] == 0.0 and math.isnan(m["ap_drop"])


def test_equals_pycocotools_run_independently_from_json_files(tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    rng = np.random.default_rng(3)
    truth, pred, gt_json, res_json = [], [], [], []
    for image_id in range(1, 13):
        boxes, labels = [], []
        for _ in range(rng.integers(1, 4)):
            x, y = rng.uniform(0, 60, 2)
            w, h = rng.uniform(8, 36, 2)
            boxes.append([x, y, x + w, y + h])
            labels.append(int(rng.integers(0, 3)))
        truth.append(ImageBoxes(boxes, labels, 100, 100))
        gt_json += [
            {
                "image_id": image_id,
                "category_id": c + 1,
                "iscrowd": 0,
                "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                "area": (b[2] - b[0]) * (b[3] - b[1]),
            }
            for b, c in zip(boxes, labels, strict=True)
        ]
        p_boxes, p_labels, p_scores = [], [], []
        for b, c in zip(boxes, labels, strict=True):  # jittered hits, some relabelled, plus clutter
            jitter = rng.normal(0, 3, 4)
            p_boxes.append([b[0] + jitter[0], b[1] + jitter[1], b[2] + jitter[2], b[3] + jitter[3]])
            p_labels.append(c if rng.uniform() > 0.2 else int(rng.integers(0, 3)))
            p_scores.append(float(rng.uniform(0.3, 1.0)))
        for _ in range(2):
            x, y = rng.uniform(0, 80, 2)
            p_boxes.append([x, y, x + 15, y + 15])
            p_labels.append(int(rng.integers(0, 3)))
            p_scores.append(float(rng.uniform(0.0, 0.6)))
        pred.append(ImageBoxes(p_boxes, p_labels, 100, 100, scores=p_scores))
        res_json += [
            {
                "image_id": image_id,
                "category_id": c + 1,
                "score": s,
                "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
            }
            for b, c, s in zip(p_boxes, p_labels, p_scores, strict=True)
        ]
    for ann_id, ann in enumerate(gt_json, start=1):
        ann["id"] = ann_id
    gt_file, res_file = tmp_path / "gt.json", tmp_path / "res.json"
    gt_file.write_text(
        json.dumps(
            {
                "images": [{"id": i, "width": 100, "height": 100} for i in range(1, 13)],
                "annotations": gt_json,
                "categories": [{"id": i + 1, "name": n} for i, n in enumerate(CLASSES)],
            }
        )
    )
    res_file.write_text(json.dumps(res_json))
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(gt_file))
        ev = COCOeval(coco, coco.loadRes(str(res_file)), iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        per_class = {}
        for cat in (1, 2, 3):
            one = COCOeval(coco, coco.loadRes(str(res_file)), iouType="bbox")
            one.params.catIds = [cat]
            one.evaluate()
            one.accumulate()
            one.summarize()
            per_class[CLASSES[cat - 1]] = one.stats[0]

    m = coco_box_metrics(pred, truth, CLASSES)
    assert 0.05 < m["map"] < 0.95  # a non-trivial case
    assert m["map"] == pytest.approx(ev.stats[0], abs=1e-12)
    assert m["map_50"] == pytest.approx(ev.stats[1], abs=1e-12)
    assert m["map_75"] == pytest.approx(ev.stats[2], abs=1e-12)
    for name, value in per_class.items():
        assert m[f"ap_{name}"] == pytest.approx(value, abs=1e-12), name


def test_match_recall_is_one_to_one():
    true = [[0, 0, 10, 10], [20, 20, 30, 30]]
    assert match_recall([[0, 0, 10, 10]], true) == 0.5
    # One prediction cannot match two true boxes, and a far prediction matches none.
    assert match_recall([[0, 0, 10, 10], [50, 50, 60, 60]], true) == 0.5
    assert match_recall([[1, 0, 10, 10], [20, 21, 30, 30]], true) == 1.0
    assert match_recall([], true) == 0.0
    assert match_recall([[0, 0, 10, 10], [0, 0, 10, 10]], [[0, 0, 10, 10]]) == 1.0
    assert math.isnan(match_recall([[0, 0, 1, 1]], []))
