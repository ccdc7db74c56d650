"""`data.on_bad_sample`: "fail" stops on the first bad sample, "skip" drops and counts them, and the
summary reports what was skipped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from conftest import SHAPES, tiny_recipe
from trainers.data_policy import BadSamples, DataError, check_train_size, data_report
from trainers.errors import RecipeError
from trainers.models.blip import TinyBlipSpec, build_tiny_processor
from trainers.tasks.captioning.data import CaptionJsonDataset


@pytest.fixture(scope="module")
def processor():
    return build_tiny_processor(TinyBlipSpec())


def _images(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.new("RGB", (16, 16)).save(folder / name)


def test_skip_drops_missing_corrupt_and_uncaptioned_samples_and_counts_them(tmp_path, processor):
    _images(tmp_path / "img", ["a.png", "b.png", "c.png"])
    (tmp_path / "img" / "c.png").write_bytes(b"\x89PNG truncated")
    captions = tmp_path / "c.json"
    captions.write_text(json.dumps({"a.png": "ok", "b.png": "", "c.png": "corrupt", "d.png": "missing"}))
    ds = CaptionJsonDataset(captions, tmp_path / "img", processor.image_processor, on_bad_sample="skip")
    assert ds.filenames == ["a.png"] and len(ds) == 1 and ds[0]["caption"] == "ok"
    assert ds.bad_samples.summary()["by_reason"] == {"bad_entry": 1, "corrupt_image": 1, "missing_image": 1}
    report = data_report(("train", ds))
    assert report["train"]["size"] == 1 and report["train"]["skipped"] == 3
    assert {e["reason"] for e in report["train"]["examples"]} == {
        "bad_entry",
        "corrupt_image",
        "missing_image",
    }


def test_jsonl_lines_fail_with_their_line_number_or_are_skipped(tmp_path, processor):
    _images(tmp_path, ["a.png", "b.png"])
    path = tmp_path / "c.jsonl"
    path.write_text(
        '{"image": "a.png", "caption": "one"}\n\n{"image": "b.png", "caption": [\n'
        '{"image": "b.png", "caption": ["two", "deux"]}\n{"image": "a.png", "caption": "again"}\n'
    )
    with pytest.raises(DataError, match=r"c\.jsonl:3: not valid JSON"):
        CaptionJsonDataset(path, tmp_path, processor.image_processor)
    ds = CaptionJsonDataset(path, tmp_path, processor.image_processor, on_bad_sample="skip")
    assert ds.filenames == ["a.png", "b.png"] and ds.references == [["one"], ["two", "deux"]]
    assert ds.bad_samples.summary()["by_reason"] == {"duplicate": 1, "malformed_line": 1}


def test_policy_value_and_global_batch_checks():
    with pytest.raises(RecipeError, match="fail, skip"):
        BadSamples("x", "ignore")  # type: ignore[arg-type]
    check_train_size(8, 4, 2, 1, "t.json")
    with pytest.raises(RecipeError, match="fewer than one global batch of 16"):
        check_train_size(8, 4, 2, 2, "t.json")


def test_skipped_samples_are_reported_in_the_training_summary(tmp_path):
    from trainers.run import complete_run, setup_run

    captions = json.loads((SHAPES / "train.json").read_text())
    names = list(captions)[:16]
    bad = {**{n: captions[n] for n in names}, "ghost.png": "a ghost", names[0]: ""}
    train = tmp_path / "train.json"
    train.write_text(json.dumps(bad))
    recipe = tiny_recipe(tmp_path / "run", epochs=1)
    recipe.data.train = str(train)
    recipe.data.max_train_samples = None
    recipe.data.on_bad_sample = "skip"
    summary = complete_run(setup_run(recipe))
    assert summary["data"]["train"]["skipped"] == 2
    assert summary["data"]["train"]["by_reason"] == {"bad_entry": 1, "missing_image": 1}
    assert summary["data"]["train"]["size"] == 15 and summary["data"]["val"]["skipped"] == 0
    written = json.loads((tmp_path / "run" / "training_summary.json").read_text())
    assert written["data"]["train"]["skipped"] == 2
