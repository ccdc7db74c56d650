"""Pose from a `datasets` source: data/stick_figures saved to disk (one row per image, an `objects` column with
each instance's box and keypoints) gives the instances, crops and keypoints of the COCO keypoints files; a
bad instance is named by key, row and instance."""

from __future__ import annotations

import numpy as np
import pytest
from source_sets import STICK, coco_disk, edited_train_split

from conftest import ROOT
from trainers.data.source_config import Columns, DatasetSource
from trainers.data_policy import DataError
from trainers.models.vitpose import TinyVitPoseSpec, build_tiny_processor
from trainers.recipe import load_recipe
from trainers.tasks.pose.task import PoseTask

N = 10
COLUMNS = Columns(image="image", boxes="objects.bbox", keypoints="objects.keypoints")


@pytest.fixture(autouse=True)
def _at_root(monkeypatch):
    monkeypatch.chdir(ROOT)


@pytest.fixture(scope="module")
def processor():
    return build_tiny_processor(TinyVitPoseSpec())


def recipe():
    return load_recipe(str(ROOT / "recipes" / "vitpose_lora.py"), [], demo=True)


def source(path, split: str) -> DatasetSource:
    return DatasetSource(kind="disk", path=str(path), split=split, columns=COLUMNS)


def test_a_saved_keypoint_set_gives_the_instances_of_the_coco_files(tmp_path, processor):
    saved = coco_disk(tmp_path / "poses", STICK, {"train": "train.json", "validation": "val.json"}, N)
    files = PoseTask().build(recipe(), processor)
    sourced_recipe = recipe()
    sourced_recipe.data.train = source(saved, "train")
    sourced_recipe.data.val = source(saved, "validation")
    sourced_recipe.data.images = None
    sourced_recipe.validate()
    assert sourced_recipe.data.missing_paths() == []
    task = PoseTask()
    assert task.model_kwargs(sourced_recipe) == PoseTask().model_kwargs(recipe())
    sourced = task.build(sourced_recipe, processor)
    for a, b in ((sourced.train, files.train), (sourced.val, files.val)):
        wanted = [r for r in b.records if r.image_id <= N]  # the first N images' instances
        assert len(a) == len(wanted) > N // 2
        for x, y in zip(a.records, wanted, strict=True):
            assert x.box == y.box and np.array_equal(x.keypoints, y.keypoints)
            assert (x.width, x.height) == (y.width, y.height)
        same_image = [[r.image_id == s.image_id for s in a.records] for r in a.records]
        assert same_image == [[r.image_id == s.image_id for s in wanted] for r in wanted]
        for i in (0, len(a) - 1):
            p, q = a[i], b[b.records.index(wanted[i])]
            assert np.array_equal(np.asarray(p["image"]), np.asarray(q["image"]))
            assert np.array_equal(p["keypoints"], q["keypoints"])


def test_a_bad_instance_names_the_key_row_and_instance(tmp_path, processor):
    def one_keypoint_short(rows):
        rows["objects"][2]["keypoints"][0] = rows["objects"][2]["keypoints"][0][:-3]

    saved = coco_disk(tmp_path / "poses", STICK, {"train": "train.json"}, 3)
    edited_train_split(saved, tmp_path / "bad", one_keypoint_short)
    bad = recipe()
    bad.data.train = bad.data.val = source(tmp_path / "bad", "train")
    with pytest.raises(DataError) as error:
        PoseTask().build(bad, processor)
    assert "data.train row 2" in str(error.value) and "instance 0" in str(error.value)
    assert "the skeleton has 11 keypoints" in str(error.value)
