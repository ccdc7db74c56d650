"""Detection from a `datasets` source: data/tiny_boxes saved to disk (one row per image, an `objects` column
with boxes and ClassLabel categories) gives the items, pixels and targets of the COCO JSON files, with boxes
stated as COCO xywh or as corners; a bad row is named by key and row."""

from __future__ import annotations

import numpy as np
import pytest
from source_sets import TINY_BOXES, coco_disk, edited_train_split

from conftest import ROOT
from trainers.data.source_config import Columns, DatasetSource
from trainers.data_policy import DataError
from trainers.errors import RecipeError
from trainers.recipe import load_recipe
from trainers.tasks.detection.task import DetectionTask, targets_of

N = 12
COLUMNS = Columns(image="image", boxes="objects.bbox", box_labels="objects.category")


@pytest.fixture(autouse=True)
def _at_root(monkeypatch):
    monkeypatch.chdir(ROOT)


def source(path, split: str, box_format: str = "xywh", columns: Columns = COLUMNS) -> DatasetSource:
    return DatasetSource(kind="disk", path=str(path), split=split, columns=columns, box_format=box_format)


def recipe(overrides=()):
    return load_recipe(
        str(ROOT / "recipes" / "detr_lora.py"),
        [f"data.max_train_samples={N}", f"data.max_val_samples={N}", *overrides],
        demo=True,
    )


@pytest.mark.parametrize("corners", [False, True], ids=["xywh", "xyxy"])
def test_a_saved_detection_set_gives_the_items_of_the_coco_files(tmp_path, corners):
    saved = coco_disk(
        tmp_path / "boxes", TINY_BOXES, {"train": "train.json", "validation": "val.json"}, N, corners
    )
    from_files = recipe()
    task = DetectionTask()
    processor = None
    files = task.build(from_files, processor)
    sourced_recipe = recipe()
    box_format = "xyxy" if corners else "xywh"
    sourced_recipe.data.train = source(saved, "train", box_format)
    sourced_recipe.data.val = source(saved, "validation", box_format)
    sourced_recipe.data.images = None
    sourced_recipe.validate()
    assert sourced_recipe.data.missing_paths() == []
    sourced_task = DetectionTask()
    assert sourced_task.model_kwargs(sourced_recipe) == task.model_kwargs(from_files)
    sourced = sourced_task.build(sourced_recipe, processor)
    for a, b in ((sourced.train, files.train), (sourced.val, files.val)):
        assert len(a) == len(b) == N
        assert [(t.boxes, t.labels, t.width, t.height) for t in targets_of(a)] == [
            (t.boxes, t.labels, t.width, t.height) for t in targets_of(b)
        ]
        for i in (0, N // 2, N - 1):
            x, y = a[i], b[i]
            assert np.array_equal(np.asarray(x["image"]), np.asarray(y["image"]))
            assert np.allclose(x["boxes"], y["boxes"]) and x["box_labels"] == y["box_labels"]


def test_a_bad_source_row_names_the_key_and_row(tmp_path):
    def outside(rows):
        rows["objects"][1]["bbox"][0] = [50.0, 50.0, 40.0, 40.0]  # reaches outside the 64x64 image

    saved = coco_disk(tmp_path / "boxes", TINY_BOXES, {"train": "train.json"}, 3)
    edited_train_split(saved, tmp_path / "bad", outside)
    bad = recipe()
    bad.data.train = bad.data.val = source(tmp_path / "bad", "train")
    with pytest.raises(DataError) as error:
        DetectionTask().build(bad, None)
    assert "data.train row 1" in str(error.value) and "outside the 64x64 image" in str(error.value)
    bad.data.on_bad_sample = "skip"
    built = DetectionTask().build(bad, None)
    assert len(built.train) == 2 and built.train.bad_samples.reasons["box_outside_image"] == 1
    unmapped = recipe()
    unmapped.data.train = source(saved, "train", columns=Columns(image="image"))
    with pytest.raises(RecipeError, match=r"data.train.columns.boxes, data.train.columns.box_labels not set"):
        DetectionTask().model_kwargs(unmapped)
    unmapped.data.train = source(saved, "train", box_format="cxcywh")
    with pytest.raises(RecipeError, match="data.train.box_format must be xywh"):
        DetectionTask().build(unmapped, None)


def test_a_source_row_with_an_unknown_label_names_its_column(tmp_path):
    """A source has no "categories" list: the fix names the label column and data.train's classes."""

    def no_label(rows):
        rows["objects"][1]["category"][0] = -1  # a ClassLabel's "no label"

    saved = coco_disk(tmp_path / "boxes", TINY_BOXES, {"train": "train.json"}, 3)
    edited_train_split(saved, tmp_path / "bad", no_label)
    bad = recipe()
    bad.data.train = bad.data.val = source(tmp_path / "bad", "train")
    with pytest.raises(DataError) as error:
        DetectionTask().build(bad, None)
    message = str(error.value)
    assert "data.train row 1" in message and "category_id -1 is not among the train categories" in message
    assert "column 'objects.category', data.train.columns.box_labels" in message
    assert "train JSON" not in message
    bad.data.on_bad_sample = "skip"
    built = DetectionTask().build(bad, None)
    assert len(built.train) == 2 and built.train.bad_samples.reasons["unknown_category"] == 1
