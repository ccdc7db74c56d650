"""Prompted generation from a `datasets` source and from a Roboflow Florence-2 export: data/fabric's JSONL saved
to disk as Florence-style rows (image, prefix, suffix), and rewritten as Roboflow lays it out (one folder per
split, `annotations.jsonl` beside its images), give the samples, pixels and targets of the JSONL files; a bad
row is named by key and row."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from source_sets import FABRIC, edited_train_split, prompted_disk

from conftest import ROOT
from trainers.data.source_config import Columns, DatasetSource
from trainers.data_policy import DataError
from trainers.models.florence2 import build_tiny_processor
from trainers.recipe import load_recipe
from trainers.tasks.prompted_generation.task import PromptedGenerationTask

N = 12
COLUMNS = Columns(image="image", prefix="prefix", suffix="suffix")


@pytest.fixture(autouse=True)
def _at_root(monkeypatch):
    monkeypatch.chdir(ROOT)


@pytest.fixture(scope="module")
def processor():
    return build_tiny_processor()


def recipe():
    return load_recipe(
        str(ROOT / "recipes" / "florence2_lora.py"),
        [f"data.max_train_samples={N}", f"data.max_val_samples={N}", "data.order=shuffled"],
        demo=True,
    )


def same_samples(a, b) -> None:
    assert len(a) == len(b) == N
    assert [(s.prefix, s.suffix, s.task, s.groups, s.size) for s in a.samples] == [
        (s.prefix, s.suffix, s.task, s.groups, s.size) for s in b.samples
    ]
    for i in (0, N - 1):
        x, y = a[i], b[i]
        for name in ("input_ids", "labels", "pixel_values"):
            assert torch.equal(x[name], y[name])


def test_a_saved_prompted_set_gives_the_samples_of_the_jsonl_files(tmp_path, processor):
    saved = prompted_disk(tmp_path / "fabric", N)
    files = PromptedGenerationTask().build(recipe(), processor)
    sourced_recipe = recipe()
    sourced_recipe.data.train = DatasetSource(kind="disk", path=str(saved), split="train", columns=COLUMNS)
    sourced_recipe.data.val = DatasetSource(kind="disk", path=str(saved), split="validation", columns=COLUMNS)
    sourced_recipe.data.images = sourced_recipe.data.val_images = None
    sourced_recipe.validate()
    assert sourced_recipe.data.missing_paths() == []
    sourced = PromptedGenerationTask().build(sourced_recipe, processor)
    same_samples(sourced.train, files.train)
    same_samples(sourced.val, files.val)


def test_a_roboflow_florence_export_reads_as_written(tmp_path, processor):
    """Roboflow's Florence-2 export: train/annotations.jsonl and valid/annotations.jsonl, images beside them."""
    for split, jsonl, folder in (("train", "train.jsonl", "train"), ("valid", "val.jsonl", "val")):
        (tmp_path / split).mkdir()
        lines = (FABRIC / jsonl).read_text().splitlines()
        for image in {json.loads(line)["image"] for line in lines if line.strip()}:
            shutil.copy(FABRIC / folder / "JPEGImages" / image, tmp_path / split / image)
        (tmp_path / split / "annotations.jsonl").write_text("\n".join(lines) + "\n")
    files = PromptedGenerationTask().build(recipe(), processor)
    exported = recipe()
    exported.data.train = str(tmp_path / "train" / "annotations.jsonl")
    exported.data.val = str(tmp_path / "valid" / "annotations.jsonl")
    exported.data.images = exported.data.val_images = None
    assert exported.data.missing_paths() == []
    built = PromptedGenerationTask().build(exported, processor)
    same_samples(built.train, files.train)
    same_samples(built.val, files.val)


def test_a_bad_row_names_the_key_and_row(tmp_path, processor):
    def three_loc_tokens(rows):
        rows["suffix"][3] = "drop<loc_1><loc_2><loc_3>"

    saved = prompted_disk(tmp_path / "fabric", 4)
    edited_train_split(saved, tmp_path / "bad", three_loc_tokens)
    bad = recipe()
    bad.data.train = bad.data.val = DatasetSource(kind="disk", path=str(tmp_path / "bad"), columns=COLUMNS)
    with pytest.raises(DataError, match=r"data.train row 3 .*key \"suffix\": label 'drop' is followed by 3"):
        PromptedGenerationTask().build(bad, processor)
