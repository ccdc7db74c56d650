"""Detection from a YOLO export (Ultralytics and Roboflow layouts): data/tiny_boxes written as data.yaml +
images/ + labels/*.txt gives the images, pixels and targets of the COCO files; a bad label line is named by
file and line."""

from __future__ import annotations

import numpy as np
import pytest
from source_sets import yolo_export

from conftest import ROOT
from trainers.data_policy import BadSamples, DataError
from trainers.recipe import load_recipe
from trainers.tasks.detection.task import DetectionTask

N = 10


@pytest.fixture(autouse=True)
def _at_root(monkeypatch):
    monkeypatch.chdir(ROOT)


def build(*overrides):
    recipe = load_recipe(
        str(ROOT / "recipes" / "detr_lora.py"),
        [f"data.max_train_samples={N}", f"data.max_val_samples={N}", *overrides],
        demo=True,
    )
    assert recipe.data.missing_paths() == []
    task = DetectionTask()
    return task, task.build(recipe, None)


def by_name(dataset):
    return {image.path.name: image for image in dataset.images}


@pytest.mark.parametrize("roboflow", [False, True], ids=["ultralytics", "roboflow"])
def test_a_yolo_export_gives_the_images_of_the_coco_files(tmp_path, roboflow):
    config = yolo_export(tmp_path / "export", N, roboflow)
    coco_task, coco = build()
    if roboflow:  # split named by its image folder; names from the data.yaml above it
        splits = [f"data.train={tmp_path}/export/train/images", f"data.val={tmp_path}/export/val/images"]
    else:
        splits = [f"data.train={config}", f"data.val={config}"]
    yolo_task, yolo = build(*splits, "data.images=null")
    assert yolo_task.classes == coco_task.classes
    for a, b in ((yolo.train, coco.train), (yolo.val, coco.val)):
        ours, theirs = by_name(a), by_name(b)
        assert sorted(ours) == sorted(theirs) and len(ours) == N
        for name, image in ours.items():
            assert image.labels == theirs[name].labels
            assert np.allclose(image.boxes, theirs[name].boxes, atol=1e-5)
            assert (image.width, image.height) == (theirs[name].width, theirs[name].height)
        first = a.images.index(ours[b.images[0].path.name])
        assert np.array_equal(np.asarray(a[first]["image"]), np.asarray(b[0]["image"]))


def test_bad_label_lines_name_file_and_line(tmp_path):
    from trainers.data.yolo import read_yolo

    config = yolo_export(tmp_path / "export", 3)
    label = sorted((tmp_path / "export" / "labels" / "train").glob("*.txt"))[1]
    good = label.read_text()
    for line, problem in (
        ("0 0.5 0.5 0.2", "is not 'class cx cy w h'"),
        ("7 0.5 0.5 0.2 0.2", "class 7 is not among the 3 names"),
        ("1 0.95 0.5 0.2 0.2", "is empty or not inside the image"),
    ):
        label.write_text(good + line + "\n")
        lineno = len(good.splitlines()) + 1
        with pytest.raises(DataError, match=rf"{label.name}:{lineno}: .*{problem}"):
            read_yolo(config, "data.train", BadSamples("x"))
        skipped = BadSamples("x", "skip")
        assert len(read_yolo(config, "data.train", skipped)["images"]) == 2 and skipped.skipped == 1
    (tmp_path / "export" / "data.yaml").write_text("names: [a, b\n")
    with pytest.raises(DataError, match=r"data.yaml:\d+: not valid YAML"):
        read_yolo(config, "data.train", BadSamples("x"))
