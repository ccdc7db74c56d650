"""The data fingerprint a run records (`trainers.data.fingerprint`): what counts as changed data, what does not.
The end-to-end case (a rerun stops, naming the change) is in tests/test_bad_inputs.py."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from trainers.data.fingerprint import differences, fingerprint


@dataclass
class Split:
    captions: str
    images: str


@dataclass
class Data:
    train: str
    images: str
    extra_val: dict[str, Split] = field(default_factory=dict)
    on_bad_sample: str = "fail"


def _data(tmp_path):
    (tmp_path / "images").mkdir()
    for name in ("a.jpg", "b.jpg"):
        (tmp_path / "images" / name).write_bytes(b"pixels")
    (tmp_path / "train.json").write_text('{"a.jpg": "a cat"}')
    (tmp_path / "extra.json").write_text('{"b.jpg": "a dog"}')
    return Data(
        str(tmp_path / "train.json"),
        str(tmp_path / "images"),
        {"coco": Split(str(tmp_path / "extra.json"), str(tmp_path / "images"))},
    )


def test_same_size_rewrite_is_noticed_by_its_mtime_and_an_annotation_by_its_content(tmp_path):
    data = _data(tmp_path)
    before = fingerprint(data)
    assert set(before["paths"]) == {
        "data.train",
        "data.images",
        "data.extra_val.coco.captions",
        "data.extra_val.coco.images",
    }
    image = tmp_path / "images" / "a.jpg"
    image.write_bytes(b"PIXELS")  # same size, other pixels
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))
    (tmp_path / "extra.json").write_text('{"b.jpg": "a cow"}')
    changed = {key: new for key, _old, new in differences(before, fingerprint(data))}
    assert set(changed) == {
        "data.images contents",
        "data.extra_val.coco.images contents",
        "data.extra_val.coco.captions contents",
    }
    assert changed["data.images contents"] == "2 files, 12 bytes: 1 rewritten (a.jpg)"


def test_a_copied_annotation_with_the_same_content_and_the_runs_own_folder_are_not_changes(tmp_path):
    data = _data(tmp_path)
    out = tmp_path / "images" / "run"  # output_dir inside the image folder
    out.mkdir()
    before = fingerprint(data, out)
    train = tmp_path / "train.json"
    train.write_text(train.read_text())  # new mtime, same bytes
    (out / "metrics.jsonl").write_text("{}\n")
    assert differences(before, fingerprint(data, out)) == []
    assert differences({"format": 0}, fingerprint(data, out)) == []  # an unknown format: no claim
