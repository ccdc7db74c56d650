"""YOLO export → Florence-2 OD JSONL through the converter: data/tiny_boxes' YOLO export converts to OD lines
whose boxes are the COCO boxes within one location bin and that the task reads; a bad label line stops the
command with exit 2, naming the label file and line."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
from source_sets import TINY_BOXES, yolo_export

from conftest import ROOT
from trainers.data_policy import BadSamples
from trainers.tasks.prompted_generation import voc_to_jsonl
from trainers.tasks.prompted_generation.data import read_jsonl


def test_a_yolo_split_converts_to_od_lines_with_the_coco_boxes(tmp_path):
    config = yolo_export(tmp_path / "export", 6)
    out = tmp_path / "train.jsonl"
    counts = voc_to_jsonl.main(
        [
            "--yolo",
            str(config),
            "--split",
            "train",
            "--tasks",
            "OD",
            "--images",
            str(tmp_path / "export"),
            "--out",
            str(out),
        ],
        out=lambda _: None,
    )
    assert counts["images"] == 6 and counts["lines"] == 6
    samples = read_jsonl(out, tmp_path / "export", BadSamples("x"))
    coco = json.loads((TINY_BOXES / "train.json").read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    by_file = {e["file_name"]: e["id"] for e in coco["images"]}
    for sample in samples:
        image_id = by_file[sample.image.name]
        truth = sorted(
            (
                names[a["category_id"]],
                [a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]],
            )
            for a in coco["annotations"]
            if a["image_id"] == image_id
        )
        got = sorted(sample.boxes())
        assert [n for n, _ in got] == [n for n, _ in truth]
        assert np.allclose(
            [b for _, b in got], [b for _, b in truth], atol=1.0
        )  # one bin of 64 px / 1000, truncated


def test_a_bad_label_line_stops_the_command_naming_file_and_line(tmp_path):
    config = yolo_export(tmp_path / "export", 3)
    label = sorted((tmp_path / "export" / "labels" / "train").glob("*.txt"))[0]
    lines = label.read_text().splitlines()
    label.write_text("\n".join([*lines, "5 0.5 0.5 0.1 0.1"]) + "\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "trainers.tasks.prompted_generation.voc_to_jsonl",
            "--yolo",
            str(config),
            "--out",
            str(tmp_path / "o.jsonl"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{label}:{len(lines) + 1}: class 5 is not among the 3 names" in result.stderr
