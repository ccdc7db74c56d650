"""A `datasets` dataset as a task's data (`data.train` / `data.val` / extra sets / test = `DatasetSource`): built
and saved to disk offline from the shipped sets, it must give the same items as the task's own files."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest
import torch

from conftest import ROOT
from trainers.data.source_config import Columns, DatasetSource
from trainers.errors import RecipeError
from trainers.models.blip import TinyBlipSpec, build_tiny_blip
from trainers.models.vit import TinyVitSpec, build_tiny_processor
from trainers.recipe import CaptionSplit, load_recipe
from trainers.tasks.captioning.task import CaptioningTask
from trainers.tasks.classification.task import ClassificationTask

SHAPES = ROOT / "data" / "shapes"
CLASSES = ROOT / "data" / "tiny_classes"


@pytest.fixture(scope="module")
def caption_disk(tmp_path_factory) -> Path:
    """data/shapes' first 24 train / 8 val captions as a DatasetDict saved with save_to_disk (images embedded)."""
    directory = tmp_path_factory.mktemp("captions") / "shapes"
    datasets.disable_progress_bars()
    splits = {}
    for split, file, n in (("train", "train.json", 24), ("validation", "val.json", 8)):
        items = list(json.loads((SHAPES / file).read_text()).items())[:n]
        splits[split] = datasets.Dataset.from_dict(
            {"img": [str(SHAPES / "images" / name) for name, _ in items], "text": [c for _, c in items]},
            features=datasets.Features({"img": datasets.Image(), "text": datasets.Value("string")}),
        )
    datasets.DatasetDict(splits).save_to_disk(str(directory))
    return directory


def caption_source(path: Path, split: str) -> DatasetSource:
    return DatasetSource(
        kind="disk", path=str(path), split=split, columns=Columns(image="img", caption="text")
    )


def test_a_saved_caption_dataset_gives_the_items_of_the_caption_files(caption_disk, tmp_path):
    recipe = load_recipe(
        str(ROOT / "recipes" / "blip_lora.py"),
        ["data.max_train_samples=24", "data.max_val_samples=8"],
        demo=True,
    )
    processor = build_tiny_blip(TinyBlipSpec())[1]
    files = CaptioningTask().build(recipe, processor)
    recipe.data.train = caption_source(caption_disk, "train")
    recipe.data.val = caption_source(caption_disk, "validation")
    recipe.data.test = CaptionSplit(captions=caption_source(caption_disk, "validation"))
    recipe.data.images = None
    recipe.validate()
    assert recipe.data.missing_paths() == []
    sourced = CaptioningTask().build(recipe, processor)
    assert len(sourced.train) == len(files.train) == 24 and len(sourced.val) == 8
    assert sourced.val.references == files.val.references == sourced.test.references
    for i in (0, 5, 23):
        a, b = sourced.train[i], files.train[i]
        assert a["caption"] == b["caption"]
        assert torch.equal(a["pixel_values"], b["pixel_values"])


def test_caption_source_errors_name_the_key(caption_disk, tmp_path):
    recipe = load_recipe(str(ROOT / "recipes" / "blip_lora.py"), [], demo=True)
    recipe.data.train = DatasetSource(
        kind="disk", path=str(caption_disk), columns=Columns(image="img", caption="caption")
    )
    with pytest.raises(RecipeError) as error:
        CaptioningTask().build(recipe, build_tiny_blip(TinyBlipSpec())[1])
    assert "data.train.columns.caption='caption'" in str(error.value) and "img, text" in str(error.value)
    recipe.data.train = caption_source(tmp_path / "nowhere", "train")
    assert recipe.data.missing_paths() == [
        f"data.train.path {str(tmp_path / 'nowhere')!r} (disk dataset source)"
    ]
    recipe.data.train = DatasetSource(kind="disk", path=str(caption_disk), streaming=True)
    with pytest.raises(RecipeError, match=r"data\.train\.streaming=True"):
        recipe.validate()
    recipe.data.train = str(SHAPES / "train.json")
    recipe.data.images = None
    with pytest.raises(RecipeError, match=r"data\.train is a caption file, so data\.images must name"):
        recipe.validate()


def test_an_imagefolder_source_classifies_like_the_image_folder(tmp_path):
    """`load_dataset("imagefolder")` over data/tiny_classes: the ClassLabel names become the classes."""
    recipe = load_recipe(str(ROOT / "recipes" / "vit_lora.py"), ["data.max_train_samples=16"], demo=True)
    recipe.data.augment = None
    processor = build_tiny_processor(TinyVitSpec())
    files = ClassificationTask().build(recipe, processor)
    cache = str(tmp_path / "cache")
    recipe.data.train = DatasetSource(
        kind="imagefolder", path=str(CLASSES / "train"), columns=Columns(label="label"), cache_dir=cache
    )
    recipe.data.val = DatasetSource(
        kind="imagefolder", path=str(CLASSES / "val"), columns=Columns(label="label"), cache_dir=cache
    )
    task = ClassificationTask()
    assert task.model_kwargs(recipe)["id2label"] == dict(enumerate(files.train.classes))
    sourced = task.build(recipe, processor)
    assert len(sourced.val) == len(files.val) and len(sourced.train) == 16
    assert sorted(sourced.val.targets) == sorted(files.val.targets)
    # the round-robin limit keeps every class, as with the folder
    assert (
        sorted(set(sourced.train.targets))
        == sorted(set(files.train.targets))
        == list(range(len(files.train.classes)))
    )
    item = sourced.val[0]
    assert item["pixel_values"].shape == files.val[0]["pixel_values"].shape
    assert sourced.val.name_of(0) == "row 0"
