"""The per-evaluation W&B prediction table comes from each task's `table_rows` hook: the image with the
prediction and the truth as text, boxes (detection, Florence-2 OD) drawn on it through `wandb.Image(boxes=)`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from conftest import ROOT
from trainers.reporting.wandb import prediction_table

TINY_CLASSES = ROOT / "data" / "tiny_classes"


def test_classification_rows_name_predicted_and_true_class():
    from trainers.models.vit import TinyVitSpec, build_tiny_processor
    from trainers.tasks.classification.data import ImageClassificationDataset
    from trainers.tasks.classification.task import ClassificationTask
    from trainers.tasks.classification.tiny_classes import CLASSES

    val = ImageClassificationDataset(
        TINY_CLASSES / "val", "data.val", list(CLASSES), build_tiny_processor(TinyVitSpec()), limit=4
    )
    rows = ClassificationTask().table_rows({0: 1, 1: 1, 2: 2, 3: 3}, val)
    assert [(r.prediction, r.target) for r in rows[:2]] == [
        (CLASSES[1], CLASSES[val.targets[0]]),
        (CLASSES[1], CLASSES[val.targets[1]]),
    ]
    table = prediction_table(rows)
    assert table.columns == ["image", "prediction", "target"] and len(table.data) == 4
    assert table.data[0][0].image.size == rows[0].image.size


def test_detection_rows_draw_confident_predicted_and_true_boxes(tmp_path):
    from PIL import Image

    from trainers.tasks.detection.data import DetectionImage
    from trainers.tasks.detection.task import DetectionTask

    path = tmp_path / "a.png"
    Image.new("RGB", (40, 30)).save(path)
    split = type(
        "Split",
        (),
        {
            "images": [DetectionImage(1, Path(path), 40, 30, np.array([[5.0, 5.0, 25.0, 20.0]]), [0])],
            "classes": ["cat", "dog"],
            "__len__": lambda self: 1,
        },
    )()
    task = DetectionTask()
    prediction = {
        "boxes": [[4.0, 5.0, 24.0, 21.0], [0.0, 0.0, 3.0, 3.0]],
        "scores": [0.9, 0.01],
        "labels": [0, 1],
    }
    (row,) = task.table_rows({0: prediction}, split)
    assert row.true_boxes == [(5.0, 5.0, 25.0, 20.0, "cat")]
    assert row.predicted_boxes == [(4.0, 5.0, 24.0, 21.0, "cat")]  # the 0.01 box is under the plot threshold
    image = prediction_table([row]).data[0][0]
    assert image._boxes["ground_truth"]._val[0]["position"] == {
        "minX": 5.0,
        "minY": 5.0,
        "maxX": 25.0,
        "maxY": 20.0,
    }
    assert image._boxes["predictions"]._val[0]["box_caption"] == "cat"


def test_florence_rows_carry_generated_text_and_target_boxes():
    from trainers.models.florence2 import build_tiny_processor
    from trainers.tasks.prompted_generation.config import PromptedData
    from trainers.tasks.prompted_generation.data import PromptedDataset
    from trainers.tasks.prompted_generation.task import PromptedGenerationTask

    source = ROOT / "data" / "fabric" / "val.jsonl"
    config = PromptedData(train=str(source), val=str(source))
    val = PromptedDataset(
        source,
        "data.val",
        build_tiny_processor(),
        config,
        source.parent / "val" / "JPEGImages",
        order=config.order,
    )
    prediction = {
        "text": "wrinkle<loc_1><loc_2><loc_3><loc_4></s>",
        "boxes": [[1.0, 2.0, 3.0, 4.0]],
        "labels": ["wrinkle"],
        "malformed": False,
    }
    (row,) = PromptedGenerationTask().table_rows({0: prediction}, val)
    assert row.target == val.samples[0].suffix and row.prediction == prediction["text"]
    assert row.predicted_boxes == [(1.0, 2.0, 3.0, 4.0, "wrinkle")]
    assert [b[4] for b in row.true_boxes] == ["wrinkle", "drop"]
    assert len(prediction_table([row]).data) == 1


def test_a_task_without_the_hook_logs_no_table():
    from trainers.tasks.interface import RunHooks

    assert (
        RunHooks().table_rows({0: {}}, None) == []
    )  # the default: no rows, so `WandbRunExtras` logs nothing
