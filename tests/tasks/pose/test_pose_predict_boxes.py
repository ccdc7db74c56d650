"""Pose prediction on plain images with person boxes per image (`python -m trainers.predict` on a ViTPose run):
`--boxes FILE` (a `{file name: [[x, y, w, h], ...]}` mapping, or COCO detection results with `--box-threshold`
and `--person-category`) and `--detector RUN` (a detection run of this project, its `--person-label`). Each
box is one instance, predicted exactly as `--box` predicts that box alone; every instance is drawn; an image
without a box gets no instance and is named on stderr; a detector without the person label stops with one
paragraph naming its labels.

The runs are the recipes' tiny demo models saved as finished runs without training (`tests/tiny_runs.py`):
what is checked is where the boxes come from and that each instance is its own box's prediction, not what a
trained model would find. The detector's class bias is raised for "person" by hand, so it reports people."""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_runs import untrained_run

from conftest import ROOT
from trainers.errors import RecipeError

STICKS = ROOT / "data" / "stick_figures"
SHAPES = ROOT / "data" / "tiny_boxes"
# the commands of docs/models/vitpose.md, run as written (in-process) in a folder laid out as they expect
PREDICT_BOXES = "python -m trainers.predict outputs/vitpose_lora --images imgs/ --out preds.jsonl --draw --boxes boxes.json"
PREDICT_RESULTS = (
    "python -m trainers.predict outputs/vitpose_lora --images imgs/ --out preds.jsonl --boxes detections.json "
    "--person-category 1 --box-threshold 0.3"
)
PREDICT_DETECTOR = "python -m trainers.predict outputs/vitpose_lora --images imgs/ --out preds.jsonl --draw --detector outputs/detr_lora"
RED = np.array([220, 30, 30])  # trainers.tasks.pose.draw.PREDICTED_COLOUR


def _true_boxes(name: str) -> list[list[float]]:
    val = json.loads((STICKS / "val.json").read_text())
    image_id = next(i["id"] for i in val["images"] if i["file_name"] == name)
    return [a["bbox"] for a in val["annotations"] if a["image_id"] == image_id]


def _favour_person(model) -> None:
    """Every query of the untrained detector becomes a confident person."""
    with torch.no_grad():
        model.class_labels_classifier.bias[model.config.label2id["person"]] += 10.0


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A user's folder: outputs/vitpose_lora, outputs/detr_lora (label "person"), outputs/detr_shapes (circle,
    square, triangle) and imgs/ (val_006 and val_016 show two stick figures, val_000 one; 000000000023.png is
    val_023 under a COCO-style numbered name)."""
    root = tmp_path_factory.mktemp("pose_boxes")
    untrained_run("recipes/vitpose_lora.py", "vitpose", "pose", root / "outputs" / "vitpose_lora")
    people = json.loads((SHAPES / "train.json").read_text())
    people["categories"][0]["name"] = "person"
    (root / "people.json").write_text(json.dumps(people))
    untrained_run(
        "recipes/detr_lora.py",
        "detr",
        "detection",
        root / "outputs" / "detr_lora",
        (f"data.train={root / 'people.json'}",),
        edit=_favour_person,
    )
    untrained_run("recipes/detr_lora.py", "detr", "detection", root / "outputs" / "detr_shapes")
    (root / "imgs").mkdir()
    for name in ("val_000.png", "val_006.png", "val_016.png"):
        shutil.copy(STICKS / "images" / name, root / "imgs" / name)
    shutil.copy(STICKS / "images" / "val_023.png", root / "imgs" / "000000000023.png")
    return root


@pytest.fixture(autouse=True)
def _in_folder(folder, monkeypatch):
    monkeypatch.chdir(folder)
    monkeypatch.setenv("WANDB_MODE", "disabled")


def predict(args: list[str], capsys) -> tuple[int, str, dict[str, dict]]:
    """`python -m trainers.predict ARGS` in this process: exit status, stderr, the rows by image name."""
    from trainers.predict import main

    capsys.readouterr()
    rc = main([str(a) for a in args])
    err = capsys.readouterr().err
    out = next((args[i + 1] for i, a in enumerate(args) if a == "--out"), "preds.jsonl")
    rows = {}
    if rc == 0:
        for line in Path(out).read_text().splitlines():
            row = json.loads(line)
            rows[row["file"].rsplit("/", 1)[-1]] = row
    return rc, err, rows


def documented(command: str, capsys) -> tuple[int, str, dict[str, dict]]:
    return predict(shlex.split(command)[3:], capsys)  # less `python -m trainers.predict`


def _crop_size() -> tuple[int, int]:
    from trainers.predict import load_run
    from trainers.tasks.pose.task import input_size

    return input_size(load_run("outputs/vitpose_lora").processor)


def test_a_boxes_file_with_two_people_gives_two_instances_each_its_own_box_s_prediction(capsys):
    from trainers.tasks.pose.data import apply_matrix, crop_geometry

    boxes = {name: _true_boxes(name) for name in ("val_006.png", "val_016.png")}
    boxes["imgs/000000000023.png"] = _true_boxes("val_023.png")[:1]  # a path: matched by its file name
    with open("boxes.json", "w") as f:
        json.dump(boxes, f)
    rc, err, rows = documented(PREDICT_BOXES, capsys)
    assert rc == 0, err
    assert [len(rows[n]["instances"]) for n in sorted(rows)] == [1, 0, 2, 2]
    assert (
        "pose: no person box in --boxes boxes.json (at --box-threshold 0.5) for val_000.png: no instances"
        in err
    )
    assert "no --box given" not in err and "Traceback" not in err
    width, height = _crop_size()
    for name in ("val_006.png", "val_016.png"):
        instances = rows[name]["instances"]
        assert [i["box"] for i in instances] == boxes[name] and {i["box_score"] for i in instances} == {None}
        assert len(rows[name]["names"]) == 11
        for instance in instances:
            crop = apply_matrix(
                crop_geometry(instance["box"], (width, height)), np.array(instance["keypoints"])
            )
            assert len(crop) == 11 and len(instance["scores"]) == 11
            # crop pixels 0 .. size - 1, give or take DARK refinement's step past an edge heatmap cell (4 crop
            # pixels: the untrained heatmaps often peak at the edge)
            size = np.array([width, height])
            assert (crop >= -0.1 * size).all() and (crop <= 1.1 * size).all(), crop
    # each instance is what `--box` predicts for its box alone, and that output keeps its one-instance shape
    for instance in rows["val_006.png"]["instances"]:
        box = ",".join(repr(v) for v in instance["box"])
        rc, err, single = predict(
            ["outputs/vitpose_lora", "--images", "imgs/", "--out", "one.jsonl", "--box", box], capsys
        )
        assert rc == 0, err
        assert set(single["val_006.png"]) == {"file", "box", "keypoints", "scores", "names"}
        alone = single["val_006.png"]
        np.testing.assert_array_equal(alone["scores"], instance["scores"])
        # A keypoint whose heatmap peaks at or below 0 (score <= 0: "not found") is placed by transformers'
        # DARK step from memory outside its own heatmap, which its batch neighbours decide; the others match.
        found = np.asarray(instance["scores"]) > 0
        assert found.sum() >= 5
        np.testing.assert_allclose(
            np.asarray(alone["keypoints"])[found], np.asarray(instance["keypoints"])[found], atol=1e-6
        )
    first, second = (np.asarray(i["keypoints"]) for i in rows["val_006.png"]["instances"])
    assert np.abs(first - second).max() > 5  # two people, two skeletons
    # the drawn picture shows every instance: red skeleton pixels inside each person's box, none without one
    scale = 256 // 80
    drawn = {p.name: np.asarray(Image.open(p)) for p in Path("preds_drawn").iterdir()}
    assert sorted(drawn) == sorted(rows)
    for x, y, w, h in boxes["val_006.png"]:
        region = drawn["val_006.png"][
            int(y * scale) : int((y + h) * scale), int(x * scale) : int((x + w) * scale)
        ]
        assert (np.abs(region.astype(int) - RED).sum(axis=-1) == 0).sum() > 10
    assert not (np.abs(drawn["val_000.png"].astype(int) - RED).sum(axis=-1) == 0).any()


def test_coco_detection_results_keep_people_above_the_threshold(capsys):
    a, b = _true_boxes("val_006.png")
    detections = [
        {"file_name": "val_006.png", "bbox": a, "score": 0.9, "category_id": 1},
        {"file_name": "val_006.png", "bbox": b, "score": 0.25, "category_id": 1},  # below 0.3
        {"file_name": "val_016.png", "bbox": _true_boxes("val_016.png")[0], "score": 0.8, "category_id": 1},
        {"file_name": "val_016.png", "bbox": [1, 1, 30, 30], "score": 0.99, "category_id": 18},  # a dog
        *(
            {"image_id": 23, "bbox": box, "score": score, "category_id": 1}  # 000000000023.png
            for box, score in zip(_true_boxes("val_023.png"), (0.6, 0.35), strict=True)
        ),
    ]
    with open("detections.json", "w") as f:
        json.dump(detections, f)
    rc, err, rows = documented(PREDICT_RESULTS, capsys)
    assert rc == 0, err
    scores = {n: [i["box_score"] for i in rows[n]["instances"]] for n in rows}
    assert scores == {
        "000000000023.png": [0.6, 0.35],
        "val_000.png": [],
        "val_006.png": [0.9],
        "val_016.png": [0.8],
    }
    assert rows["val_006.png"]["instances"][0]["box"] == a
    assert "no person box in --boxes detections.json (at --box-threshold 0.3) for val_000.png" in err
    base = ["outputs/vitpose_lora", "--images", "imgs/", "--out", "coco.jsonl", "--boxes", "detections.json"]
    rc, err, rows = predict([*base, "--person-category", "1", "--box-threshold", "0.2"], capsys)
    assert rc == 0 and [i["box_score"] for i in rows["val_006.png"]["instances"]] == [0.9, 0.25]
    rc, err, rows = predict([*base, "--person-category", "1"], capsys)  # the default threshold, 0.5
    assert rc == 0 and [i["box_score"] for i in rows["000000000023.png"]["instances"]] == [0.6]
    rc, err, _ = predict(base, capsys)  # two categories and no word on which are people
    assert rc == 2 and "Traceback" not in err
    assert "holds detections of 2 categories (category_id 1, 18)" in err and "--person-category ID" in err
    rc, err, _ = predict([*base, "--person-category", "1", "--box-threshold", "2"], capsys)
    assert rc == 2 and "--box-threshold is a score in [0, 1]" in err


def test_a_detector_run_gives_the_boxes_of_its_person_label(capsys):
    rc, err, rows = documented(PREDICT_DETECTOR, capsys)
    assert rc == 0, err
    assert "no --box given" not in err and "Traceback" not in err
    rc, err, found = predict(
        ["outputs/detr_lora", "--images", "imgs/", "--out", "det.jsonl", "--threshold", "0.5"], capsys
    )
    assert rc == 0, err
    total = 0
    for name, row in rows.items():
        people = [
            (box, score)
            for box, score, label in zip(
                found[name]["boxes"], found[name]["scores"], found[name]["names"], strict=True
            )
            if label == "person"
        ]
        instances = row["instances"]
        assert len(instances) == len(people)
        for instance, ((x0, y0, x1, y1), score) in zip(instances, people, strict=True):
            np.testing.assert_allclose(instance["box"], [x0, y0, x1 - x0, y1 - y0], atol=1e-4)
            assert instance["box_score"] == pytest.approx(score)
            assert len(instance["keypoints"]) == 11
        total += len(instances)
    assert total >= 4  # every image has people by the detector's lights
    assert sorted(p.name for p in Path("preds_drawn").iterdir()) == sorted(rows)


def test_a_detector_without_the_person_label_names_its_labels(capsys):
    base = [
        "outputs/vitpose_lora",
        "--images",
        "imgs/",
        "--out",
        "shapes.jsonl",
        "--detector",
        "outputs/detr_shapes",
    ]
    rc, err, _ = predict(base, capsys)
    assert rc == 2 and "Traceback" not in err
    paragraph = err[err.index("error: ") :].strip()
    assert "\n\n" not in paragraph
    assert "outputs/detr_shapes: its labels are circle, square, triangle; none is 'person'" in paragraph
    assert "--person-label NAME" in paragraph
    rc, err, rows = predict([*base, "--person-label", "Circle", "--box-threshold", "0"], capsys)
    assert rc == 0, err
    assert all("instances" in row for row in rows.values())


def test_boxes_by_file_name_need_file_names():
    """The app predicts uploaded images, which have no file names: `--boxes` says so; `--detector` works."""
    from trainers.tasks.pose.task import PoseTask

    with pytest.raises(RecipeError, match="--boxes matches boxes to images by file name"):
        PoseTask().predict_images(None, None, [], {"boxes": "boxes.json"})
