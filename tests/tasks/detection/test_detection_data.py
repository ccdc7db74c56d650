"""Detection data and metrics without training: boxes survive augmentation round trips and the DETR
collation, mAP on a hand-built case equals the value worked out by hand, every kind of bad annotation
stops with one paragraph naming the file and the annotation id (or is skipped and counted), the backbone
policy is what the plan applies, and LoRA on DETR's query embeddings is refused with the reason."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT
from trainers.data.augment import Augment, RandomResizedCrop, Sample, augment
from trainers.data_policy import DataError
from trainers.recipe import load_recipe
from trainers.tasks.detection.data import (
    AugmentedDetection,
    DetectionDataset,
    DetrCollator,
    read_categories,
)

RECIPE = ROOT / "recipes" / "detr_lora.py"
TINY = ROOT / "data" / "tiny_boxes"


@pytest.fixture(autouse=True)
def _at_root(monkeypatch):
    monkeypatch.chdir(ROOT)


def coco(
    tmp_path: Path,
    annotations: list[dict],
    images: list[dict] | None = None,
    write_images: bool = True,
    size: tuple[int, int] = (40, 30),
) -> Path:
    images = images or [{"id": 1, "file_name": "a.png", "width": size[0], "height": size[1]}]
    if write_images:
        for entry in images:
            Image.new("RGB", size, (250, 250, 250)).save(tmp_path / entry["file_name"])
    payload = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}],
    }
    path = tmp_path / "train.json"
    path.write_text(json.dumps(payload))
    return path


def dataset(path: Path, policy: str = "fail") -> DetectionDataset:
    return DetectionDataset(path, "data.train", read_categories(path, "data.train"), None, policy)


# ------------------------------------------------------------------------------------------- golden


def test_boxes_survive_flip_twice_and_a_scale_round_trip():
    image = Image.new("RGB", (64, 48))
    boxes = np.array([[3.0, 5.0, 20.0, 30.0], [40.0, 1.0, 63.0, 47.0]])
    sample = Sample(image=image, boxes=boxes, box_labels=[0, 2])
    flip = Augment(hflip=1.0)
    once = augment(sample, flip, seed=0, epoch=0, index=0).sample
    assert once.boxes[0].tolist() == [44.0, 5.0, 61.0, 30.0]  # x -> 64 - x
    twice = augment(once, flip, seed=0, epoch=0, index=0).sample
    np.testing.assert_allclose(twice.boxes, boxes)
    assert twice.box_labels == [0, 2]
    up = Augment(
        random_resized_crop=RandomResizedCrop(scale=(1.0, 1.0), ratio=(64 / 48, 64 / 48), size=(160, 120))
    )
    big = augment(sample, up, seed=0, epoch=0, index=0).sample
    np.testing.assert_allclose(big.boxes, boxes * 2.5)
    down = Augment(
        random_resized_crop=RandomResizedCrop(scale=(1.0, 1.0), ratio=(64 / 48, 64 / 48), size=(64, 48))
    )
    np.testing.assert_allclose(augment(big, down, seed=0, epoch=0, index=0).sample.boxes, boxes, atol=1e-9)


def test_the_collator_gives_detr_s_normalised_cxcywh_labels_of_the_true_boxes():
    from trainers.models.detr import TinyDetrSpec, build_tiny_processor

    categories = read_categories(TINY / "train.json", "data.train")
    train = DetectionDataset(TINY / "train.json", "data.train", categories, TINY / "images")
    items = [train[0], train[1]]
    batch = DetrCollator(build_tiny_processor(TinyDetrSpec()))(items)
    assert set(batch) == {"pixel_values", "pixel_mask", "labels"}
    for item, labels in zip(items, batch["labels"], strict=True):
        w, h = item["image"].size
        x0, y0, x1, y1 = np.asarray(item["boxes"]).T
        expected = np.stack([(x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h], 1)
        np.testing.assert_allclose(labels["boxes"].numpy(), expected, atol=1e-6)
        assert labels["class_labels"].tolist() == item["box_labels"]


def test_augmentation_drops_boxes_under_the_minimum_area_and_counts_them(tmp_path):
    # a 40x30 image with a 4x4 box at the left edge: a crop of the right half removes it
    path = coco(
        tmp_path,
        [
            {"id": 11, "image_id": 1, "category_id": 3, "bbox": [0, 0, 4, 4]},
            {"id": 12, "image_id": 1, "category_id": 7, "bbox": [25, 5, 12, 20]},
        ],
    )
    base = dataset(path)
    config = Augment(
        random_resized_crop=RandomResizedCrop(scale=(0.25, 0.25), ratio=(0.75, 0.75)), min_box_area=4.0
    )
    wrapped = AugmentedDetection(base, config, seed=0)
    dropped = 0
    for epoch in range(12):
        wrapped.set_epoch(epoch)
        item = wrapped[0]
        dropped += item["dropped_boxes"]
        assert len(item["boxes"]) == len(item["box_labels"]) == 2 - item["dropped_boxes"]
    assert dropped > 0
    assert base.bad_samples.boxes_dropped_by_augmentation == dropped
    assert base.bad_samples.summary()["boxes_dropped_by_augmentation"] == dropped


def test_map_on_a_hand_built_case_equals_the_hand_computed_value():
    """Image 1: a perfect 'cat' box (AP 1). Image 2: the 'dog' box found with IoU 0.62, so it is a hit at
    the IoU thresholds .50, .55, .60 only: AP 3/10. mAP = (1 + 0.3) / 2; mAP@.5 = 1; mAP@.75 = (1 + 0) / 2."""
    from types import SimpleNamespace

    from trainers.tasks.detection.data import DetectionImage
    from trainers.tasks.detection.task import DetectionTask

    images = [
        DetectionImage(1, Path("a"), 40, 40, np.array([[5.0, 5.0, 25.0, 25.0]]), [0]),
        DetectionImage(2, Path("b"), 40, 40, np.array([[0.0, 0.0, 10.0, 10.0]]), [1]),
    ]
    data = SimpleNamespace(images=images, classes=["cat", "dog"], __len__=lambda: 2)
    data = type("Split", (), {"images": images, "classes": ["cat", "dog"], "__len__": lambda self: 2})()
    predictions = {
        0: {"boxes": [[5.0, 5.0, 25.0, 25.0]], "scores": [0.9], "labels": [0]},
        1: {"boxes": [[0.0, 0.0, 10.0, 6.2]], "scores": [0.8], "labels": [1]},
    }
    metrics = DetectionTask().score(predictions, data)
    assert metrics["ap_cat"] == pytest.approx(1.0)
    assert metrics["ap_dog"] == pytest.approx(0.3)
    assert metrics["map"] == pytest.approx(0.65)
    assert metrics["map_50"] == pytest.approx(1.0)
    assert metrics["map_75"] == pytest.approx(0.5)


# ----------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("annotation", "words"),
    [
        ({"id": 41, "category_id": 5, "bbox": [1, 1, 5, 5]}, ["category_id 5", "3 (cat), 7 (dog)"]),
        ({"id": 42, "category_id": 3, "bbox": [30, 1, 15, 5]}, ["reaches outside the 40x30 image"]),
        (
            {"id": 43, "category_id": 3, "bbox": [1, 1, 0, 5]},
            ["non-positive width or height", "x1, y1, x2, y2"],
        ),
        ({"id": 44, "category_id": 3, "bbox": [1, 1, 5]}, ["is not [x, y, width, height]"]),
    ],
)
def test_a_bad_annotation_stops_naming_the_file_and_annotation_id(tmp_path, annotation, words):
    path = coco(tmp_path, [{"image_id": 1, **annotation}])
    with pytest.raises(DataError) as error:
        dataset(path)
    message = str(error.value)
    assert f"{path}: annotation id {annotation['id']} (image id 1, a.png)" in message
    assert "on_bad_sample" in message and "\n" not in message
    for word in words:
        assert word in message


def test_a_missing_image_stops_or_is_skipped_and_counted(tmp_path):
    images = [
        {"id": 1, "file_name": "a.png", "width": 40, "height": 30},
        {"id": 2, "file_name": "gone.png", "width": 40, "height": 30},
    ]
    Image.new("RGB", (40, 30)).save(tmp_path / "a.png")
    path = coco(
        tmp_path,
        [{"id": 1, "image_id": 2, "category_id": 3, "bbox": [1, 1, 5, 5]}],
        images,
        write_images=False,
    )
    with pytest.raises(DataError, match=r"image id 2: image file .*gone.png not found"):
        dataset(path)
    kept = dataset(path, "skip")
    assert len(kept) == 1 and kept.bad_samples.reasons == {"missing_image": 1}


def test_skip_drops_the_image_of_a_bad_annotation_and_counts_it(tmp_path):
    images = [
        {"id": 1, "file_name": "a.png", "width": 40, "height": 30},
        {"id": 2, "file_name": "b.png", "width": 40, "height": 30},
    ]
    path = coco(
        tmp_path,
        [
            {"id": 1, "image_id": 1, "category_id": 3, "bbox": [1, 1, 5, 5]},
            {"id": 2, "image_id": 2, "category_id": 9, "bbox": [1, 1, 5, 5]},
        ],
        images,
    )
    kept = dataset(path, "skip")
    assert [im.image_id for im in kept.images] == [1]
    assert kept.bad_samples.summary()["by_reason"] == {"unknown_category": 1}
    assert kept.images[0].boxes.tolist() == [[1.0, 1.0, 6.0, 6.0]] and kept.images[0].labels == [0]


def test_an_image_whose_size_differs_from_the_json_stops(tmp_path):
    path = coco(tmp_path, [], [{"id": 1, "file_name": "a.png", "width": 80, "height": 30}], size=(40, 30))
    with pytest.raises(DataError, match="the JSON says 80x30 but .*a.png is 40x30"):
        dataset(path)


# ------------------------------------------------------------------------------ model, plan, lora


def plan_of(*overrides: str):
    from trainers.plan import load_model, prepare_model

    recipe = load_recipe(RECIPE, list(overrides), demo=True)
    model, processor, source = load_model(recipe)
    return prepare_model(model, processor, source, recipe)


def test_detr_construction_freezes_the_whole_resnet_backbone():
    """The trap the `data.backbone` field exists for: with the transformers ResNet, DETR's own freeze rule
    (looking for `stage.1`) matches nothing and every backbone parameter comes out frozen."""
    from trainers.models.detr import TinyDetrSpec, build_tiny_detr

    model, _ = build_tiny_detr(TinyDetrSpec(), num_labels=3)
    backbone = list(model.model.backbone.parameters())
    assert backbone and not any(p.requires_grad for p in backbone)


@pytest.mark.parametrize(
    ("policy", "trained"),
    [
        ("frozen", set()),
        ("unfreeze", {"embedder", "stages.0", "stages.1"}),
        ("freeze_stage1", {"stages.1"}),
    ],
)
def test_the_backbone_policy_is_applied_and_shown_in_the_plan(policy, trained):
    for lora in ("lora=none", None):
        prepared = plan_of(f"data.backbone={policy}", *([lora] if lora else []))
        parts = {
            re.search(r"embedder|stages\.\d", n).group(0)
            for n, p in prepared.core.named_parameters()
            if n.startswith("model.backbone.") and p.requires_grad
        }
        assert parts == trained
        rules = [r.rule for r in prepared.freeze.rules]
        assert any(f"(from data.backbone='{policy}')" in r and "model.backbone" in r for r in rules), rules
        if lora is None and policy != "frozen":  # trained fully on top of the adapters, saved with them
            assert "model.backbone" in " ".join(prepared.lora.modules_to_save)


def test_lora_on_query_position_embeddings_is_refused_with_the_reason():
    from trainers.errors import RecipeError

    with pytest.raises(RecipeError) as error:
        plan_of("lora.target_modules=q_proj,query_position_embeddings")
    message = str(error.value)
    assert "'model.query_position_embeddings'" in message and "through its .weight" in message
    assert "lora.modules_to_save" in message


def test_the_real_size_architecture_counts_on_the_meta_device():
    from trainers.models.detr import DETR_DETECTION, DETR_RESNET50

    model = DETR_DETECTION.meta_model(DETR_RESNET50, num_labels=91)
    assert next(model.parameters()).device.type == "meta"
    towers = DETR_DETECTION.tower_counts(model)
    backbone = sum(p.numel() for p in model.model.backbone.parameters())
    # ResNet-50 without its fc (23.45M), DETR-R50 ~41.3M with COCO's 91 + 1 classes (the paper's 41M)
    assert 23_400_000 < backbone < 23_600_000
    assert 41_000_000 < sum(towers.values()) < 41_700_000
    assert towers["head"] == (256 * 92 + 92) + (256 * 256 + 256) * 2 + (256 * 4 + 4)
    assert model.model.query_position_embeddings.lora_noop_reason
