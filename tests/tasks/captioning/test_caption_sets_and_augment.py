"""Captioning's `data.augment`, `data.extra_val` and `data.test` (the task's side of what the classification
task has too): a flip mirrors the image and swaps left/right in the caption, training split only and seeded
by (seed, epoch, index); extra sets are scored at every evaluation under their prefix, the test split once
at the end with the best model."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image, ImageOps

from conftest import ROOT
from trainers.data.augment import Augment
from trainers.errors import RecipeError
from trainers.models.blip import TinyBlipSpec, build_tiny_blip
from trainers.recipe import CaptionSplit, load_recipe
from trainers.recipe.checks import check_task
from trainers.run import run_training
from trainers.tasks.captioning.data import CaptionJsonDataset

SHAPES = ROOT / "data" / "shapes"


@pytest.fixture(scope="module")
def image_processor():
    return build_tiny_blip(TinyBlipSpec())[1].image_processor


def test_a_flip_mirrors_the_image_and_swaps_the_sides_in_the_caption(image_processor):
    captions = json.loads((SHAPES / "val.json").read_text())
    index, name = next((i, n) for i, n in enumerate(captions) if " left of " in captions[n])
    flipped = CaptionJsonDataset(
        SHAPES / "val.json", SHAPES / "images", image_processor, augment=Augment(hflip=1.0), seed=3
    )
    plain = CaptionJsonDataset(SHAPES / "val.json", SHAPES / "images", image_processor)
    item = flipped[index]
    assert plain[index]["caption"] == captions[name]
    assert item["caption"] == captions[name].replace(" left of ", " right of ")
    with Image.open(SHAPES / "images" / name) as image:
        mirrored = image_processor(images=ImageOps.mirror(image.convert("RGB")), return_tensors="pt")[
            "pixel_values"
        ][0]
    assert torch.equal(item["pixel_values"], mirrored)


def test_caption_augmentation_is_seeded_by_epoch_and_index(image_processor):
    train = CaptionJsonDataset(
        SHAPES / "val.json", SHAPES / "images", image_processor, augment=Augment(hflip=0.5), seed=7
    )
    epoch0 = [train[i]["caption"] for i in range(24)]
    assert epoch0 == [train[i]["caption"] for i in range(24)]
    train.set_epoch(1)
    epoch1 = [train[i]["caption"] for i in range(24)]
    sided = [i for i, c in enumerate(epoch0) if " left of " in c or " right of " in c]
    assert sided and any(epoch0[i] != epoch1[i] for i in sided)
    train.set_epoch(0)
    assert epoch0 == [train[i]["caption"] for i in range(24)]


def test_no_flip_leaves_captions_that_name_a_side_unflipped(image_processor):
    train = CaptionJsonDataset(
        SHAPES / "val.json",
        SHAPES / "images",
        image_processor,
        augment=Augment(hflip=1.0, caption_sides="no_flip"),
    )
    plain = CaptionJsonDataset(SHAPES / "val.json", SHAPES / "images", image_processor)
    for i in range(12):
        a, b = train[i], plain[i]
        assert a["caption"] == b["caption"]
        sided = " left of " in a["caption"] or " right of " in a["caption"]
        assert torch.equal(a["pixel_values"], b["pixel_values"]) == sided


def blip_recipe(tmp_path, *extra: str):
    return load_recipe(
        str(ROOT / "recipes" / "blip_lora.py"),
        [
            f"output_dir={tmp_path / 'run'}",
            "training.epochs=2",
            "data.max_train_samples=16",
            "data.max_val_samples=6",
            "evaluation.num_beams=1",
            "evaluation.max_length=8",
            "training.resume=never",
            "reporting.plots=false",
            *extra,
        ],
        demo=True,
    )


def test_bad_caption_sets_and_augment_settings_are_recipe_errors(tmp_path):
    recipe = blip_recipe(tmp_path)
    recipe.data.augment = Augment(hflip=1.5)
    with pytest.raises(RecipeError, match=r"data\.augment\.hflip"):
        recipe.validate()
    recipe.data.augment = None
    recipe.data.extra_val = {"coco": str(SHAPES / "val.json")}
    with pytest.raises(RecipeError, match=r"data\.extra_val\['coco'\] must be a CaptionSplit"):
        recipe.validate()
    recipe.data.extra_val = {
        "coco": CaptionSplit(captions=str(tmp_path / "nope.json"), images=str(SHAPES / "images"))
    }
    assert any("data.extra_val['coco'].captions" in m for m in recipe.data.missing_paths())


@pytest.mark.slow
def test_extra_caption_set_every_evaluation_and_the_test_split_once(tmp_path, monkeypatch):
    """The extra set and the test split are the 6 validation images themselves, so their scores must equal
    the target set's exactly: at every evaluation (extra set) and at the best epoch (test split)."""
    monkeypatch.setenv("WANDB_MODE", "disabled")
    captions = json.loads((SHAPES / "val.json").read_text())
    subset = tmp_path / "val6.json"
    subset.write_text(json.dumps(dict(list(captions.items())[:6])))
    same = CaptionSplit(captions=str(subset), images=str(SHAPES / "images"))
    recipe = blip_recipe(tmp_path)
    recipe.data.extra_val = {"again": same}
    recipe.data.test = same
    recipe.data.augment = Augment(hflip=0.5)
    recipe.early_stopping.metric = "again_rouge_l"  # early stopping names the set it watches
    check_task(recipe)
    summary = run_training(recipe)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] > 0 for r in records] == [False, True, True]  # before training, then 2 epochs
    for record in records:
        metrics = record["eval"]
        for name in ("rouge_l", "cider_d", "object_accuracy", "relation_accuracy"):
            assert metrics[f"again_{name}"] == metrics[name], name
        assert metrics["again_distinct_predictions"] == record["distinct_predictions"]
        # the constant-caption baseline is scored per set: non-zero, and the same references give the same
        for name, value in record["baseline"].items():
            assert metrics[f"again_baseline_{name}"] == value, name
        assert record["baseline"]["cider_d"] > 0.1
    assert summary["early_stopping"]["metric"] == "eval_again_rouge_l"
    best = summary["best_metrics"]
    assert summary["test_metrics"]["test_rouge_l"] == best["rouge_l"]
    assert summary["test_metrics"]["test_cider_d"] == best["cider_d"]
    assert set(summary["data"]) >= {"train", "val", "val_again", "test"}
