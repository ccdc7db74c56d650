"""Captioning from a COCO captions file: data/shapes' caption files written as captions_*.json (images +
annotations) give the same items and references; a bad entry is named by file and line."""

from __future__ import annotations

import json

import pytest
import torch
from source_sets import coco_captions

from conftest import ROOT, SHAPES
from trainers.data.coco_captions import read_coco_captions
from trainers.data_policy import BadSamples, DataError
from trainers.models.blip import TinyBlipSpec, build_tiny_blip
from trainers.recipe import load_recipe
from trainers.tasks.captioning.task import CaptioningTask


def test_a_coco_captions_file_gives_the_items_of_the_caption_files(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    overrides = ["data.max_train_samples=16", "data.max_val_samples=8"]
    processor = build_tiny_blip(TinyBlipSpec())[1]
    files = CaptioningTask().build(
        load_recipe(str(ROOT / "recipes" / "blip_lora.py"), overrides, demo=True), processor
    )
    train = coco_captions(tmp_path / "captions_train.json", json.loads((SHAPES / "train.json").read_text()))
    val = coco_captions(tmp_path / "captions_val.json", json.loads((SHAPES / "val.json").read_text()))
    recipe = load_recipe(
        str(ROOT / "recipes" / "blip_lora.py"),
        [*overrides, f"data.train={train}", f"data.val={val}"],
        demo=True,
    )
    coco = CaptioningTask().build(recipe, processor)
    assert coco.train.filenames == files.train.filenames and coco.val.references == files.val.references
    for i in (0, 15):
        a, b = coco.train[i], files.train[i]
        assert a["caption"] == b["caption"] and torch.equal(a["pixel_values"], b["pixel_values"])


def test_coco_captions_refusals_name_file_and_line(tmp_path):
    path = coco_captions(tmp_path / "captions.json", {"a.png": ["one", "two"], "b.png": "three"})
    payload = json.loads(path.read_text())
    assert read_coco_captions(path, BadSamples("x"))[0] == {"a.png": ["one", "two"], "b.png": ["three"]}
    payload["images"].append({"id": 7, "file_name": "a.png"})
    path.write_text(json.dumps(payload, indent=1))
    with pytest.raises(
        DataError, match=r"captions\.json:16: file_name 'a.png' is listed twice \(first at .*:4\)"
    ):
        read_coco_captions(path, BadSamples("x"))
    payload["images"][-1] = {"id": 7, "file_name": "c.png"}  # an image without a caption
    path.write_text(json.dumps(payload, indent=1))
    with pytest.raises(DataError, match=r"captions\.json:16: image 'c.png' has no caption"):
        read_coco_captions(path, BadSamples("x"))
    skipped = BadSamples("x", "skip")
    assert (
        list(read_coco_captions(path, skipped)[0]) == ["a.png", "b.png"] and skipped.reasons["bad_entry"] == 1
    )
    path.write_text('{"images": [], "annotations": [\n  {"id": 1,}\n]}')
    with pytest.raises(DataError, match=r"captions\.json:2: not valid JSON"):
        read_coco_captions(path, BadSamples("x"))
