"""Retrieval from a `datasets` source: data/shape_pairs saved to disk as image-text pairs (an image and a list of
captions per row) gives the pairs, pixels and captions of the caption files."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from source_sets import pairs_disk

from conftest import ROOT
from trainers.data.source_config import Columns, DatasetSource
from trainers.errors import RecipeError
from trainers.models.vit import TinyVitSpec, build_tiny_processor
from trainers.recipe import load_recipe
from trainers.tasks.retrieval.task import RetrievalTask

N = 12


@pytest.fixture(autouse=True)
def _at_root(monkeypatch):
    monkeypatch.chdir(ROOT)


def recipe():
    return load_recipe(
        str(ROOT / "recipes" / "clip_minilm.py"),
        [f"data.max_train_samples={N}", f"data.max_val_samples={N}"],
        demo=True,
    )


def source(path, split: str, caption: str = "captions") -> DatasetSource:
    return DatasetSource(
        kind="disk", path=str(path), split=split, columns=Columns(image="image", caption=caption)
    )


def test_a_saved_pair_set_gives_the_pairs_of_the_caption_files(tmp_path):
    saved = pairs_disk(tmp_path / "pairs", N)
    processor = SimpleNamespace(image_processor=build_tiny_processor(TinyVitSpec()), tokenizer=None)
    files = RetrievalTask().build(recipe(), processor)
    sourced_recipe = recipe()
    sourced_recipe.data.train = source(saved, "train")
    sourced_recipe.data.val = source(saved, "validation")
    sourced_recipe.data.images = None
    sourced_recipe.validate()
    assert sourced_recipe.data.missing_paths() == []
    sourced = RetrievalTask().build(sourced_recipe, processor)
    for a, b in ((sourced.train, files.train), (sourced.val, files.val)):
        assert len(a) == len(b) == N
        assert [p.captions for p in a.pairs] == [p.captions for p in b.pairs]
        for i in (0, N - 1):
            x, y = a[i], b[i]
            assert x["captions"] == y["captions"] and torch.equal(x["pixel_values"], y["pixel_values"])
    bad = recipe()
    bad.data.train = source(saved, "train", caption="text")
    with pytest.raises(RecipeError, match=r"data.train.columns.caption='text'.*image, captions"):
        RetrievalTask().build(bad, processor)
    bad.data.train = DatasetSource(kind="disk", path=str(saved), columns=Columns(image="image"))
    with pytest.raises(RecipeError, match=r"data.train.columns.caption not set"):
        RetrievalTask().build(bad, processor)


def test_a_coco_captions_file_gives_the_pairs_of_the_caption_file(tmp_path):
    import json

    from source_sets import PAIRS, coco_captions

    from trainers.data_policy import DataError
    from trainers.tasks.retrieval.data import read_pairs

    images = ROOT / "data" / "shapes" / "images"
    entries = json.loads((PAIRS / "val.json").read_text())
    coco = coco_captions(tmp_path / "captions_val.json", entries)
    ours, theirs = read_pairs(PAIRS / "val.json", "data.val", images), read_pairs(coco, "data.val", images)
    assert [(p.path, p.captions) for p in ours] == [(p.path, p.captions) for p in theirs]
    assert theirs[1].where == f"{coco}:10"  # the image entry's line
    payload = json.loads(coco.read_text())
    payload["annotations"][2]["image_id"] = 999
    coco.write_text(json.dumps(payload, indent=1))
    lines = coco.read_text().splitlines()
    start = lines.index(' "annotations": [')
    line = next(i for i in range(start, len(lines)) if lines[i] == '   "id": 3,')  # 1-based: its "{" line
    with pytest.raises(DataError, match=rf"captions_val\.json:{line}: annotation id 3: image_id 999"):
        read_pairs(coco, "data.val", images)
