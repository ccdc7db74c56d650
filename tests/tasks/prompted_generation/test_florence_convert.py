"""The VOC -> Florence JSONL converter: a golden file, bins equal to the native post-processor's, the round trip
through `post_process_generation`, flips, and every bad input naming its file."""

from __future__ import annotations

import json
import random
from types import SimpleNamespace

import pytest
from PIL import Image, ImageOps

from trainers.data_policy import DataError
from trainers.tasks.prompted_generation import voc_to_jsonl
from trainers.tasks.prompted_generation.loc import dequantize, parse_suffix, quantize
from trainers.tasks.prompted_generation.voc import flip_box

GOLDEN_XML = """<annotation>
  <folder>JPEGImages</folder>
  <filename>0 (1).jpg</filename>
  <size><width>64</width><height>48</height><depth>3</depth></size>
  <object>
    <name>wrinkle</name>
    <description>long wrinkle</description>
    <bndbox><xmin>5</xmin><ymin>31</ymin><xmax>64</xmax><ymax>48</ymax></bndbox>
  </object>
  <object>
    <name>drop</name>
    <bndbox><xmin>13</xmin><ymin>7</ymin><xmax>29</xmax><ymax>22</ymax></bndbox>
  </object>
</annotation>
"""
# By hand: x / (64 / 1000) and y / (48 / 1000), floored; 64 and 48 (the far edges) clamp to 999, not 1000.
# drop: 13 -> 203.1, 7 -> 145.8, 29 -> 453.1, 22 -> 458.3; wrinkle: 5 -> 78.1, 31 -> 645.8, 64 -> 999, 48 -> 999.
# Reading order (top first): drop, then wrinkle.
DROP = "drop<loc_203><loc_145><loc_453><loc_458>"
WRINKLE = "<loc_78><loc_645><loc_999><loc_999>"
GOLDEN = [
    {"image": "0 (1).jpg", "prefix": "<OD>", "suffix": DROP + "wrinkle" + WRINKLE},
    {"image": "0 (1).jpg", "prefix": "<DENSE_REGION_CAPTION>", "suffix": DROP + "long wrinkle" + WRINKLE},
    {
        "image": "0 (1).jpg",
        "prefix": "<CAPTION_TO_PHRASE_GROUNDING>drop and wrinkle",
        "suffix": DROP + "wrinkle" + WRINKLE,
    },
]


def voc_set(tmp_path, xml: str = GOLDEN_XML, name: str = "0 (1).jpg", size=(64, 48)):
    ann, images = tmp_path / "Annotations", tmp_path / "JPEGImages"
    ann.mkdir(exist_ok=True)
    images.mkdir(exist_ok=True)
    image = Image.new("RGB", size, (120, 110, 100))
    image.paste((255, 0, 0), (0, 0, 4, 4))  # an asymmetric red corner: the flip is visible
    image.save(images / name)
    (ann / "a.xml").write_text(xml)
    return ann, images


def run(ann, images, out, *extra):
    return voc_to_jsonl.main(
        ["--voc", str(ann), "--images", str(images), "--out", str(out), *extra], out=lambda _: None
    )


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_golden_voc_file(tmp_path):
    ann, images = voc_set(tmp_path)
    counts = run(ann, images, tmp_path / "out.jsonl")
    assert lines(tmp_path / "out.jsonl") == GOLDEN
    assert counts == {"images": 1, "lines": 3, "skipped": 0, "flipped": 0}


def test_bins_equal_the_native_post_processor():
    import torch
    from transformers.models.florence2.processing_florence2 import Florence2PostProcessor

    native = Florence2PostProcessor(config={}, tokenizer=SimpleNamespace(all_special_tokens=[]))
    rng = random.Random(0)
    for _ in range(100):
        w, h = rng.randrange(16, 2000), rng.randrange(16, 2000)
        boxes = []
        for _ in range(5):
            x1, y1 = rng.uniform(0, w), rng.uniform(0, h)
            boxes.append([x1, y1, rng.uniform(x1, w), rng.uniform(y1, h)])
        boxes.append([0, 0, w, h])  # the far edges: 999, never 1000
        boxes.append([float(rng.randrange(w)), float(rng.randrange(h)), float(w), float(h)])  # integer pixels
        ours = quantize(boxes, (w, h))
        theirs = native.quantize(torch.tensor(boxes), (w, h)).tolist()
        assert ours == theirs, (w, h)
        assert max(max(b) for b in ours) <= 999
        assert dequantize(ours, (w, h)) == native.dequantize(torch.tensor(ours), (w, h)).tolist()


def test_round_trip_voc_to_loc_tokens_to_parsed_boxes_within_one_bin(tmp_path):
    from trainers.models.florence2 import build_tiny_processor

    processor = build_tiny_processor()
    xml = GOLDEN_XML.replace("<width>64</width><height>48</height>", "<width>640</width><height>480</height>")
    xml = xml.replace("<xmin>13</xmin>", "<xmin>133</xmin>").replace("<xmax>29</xmax>", "<xmax>290</xmax>")
    xml = xml.replace("<ymax>22</ymax>", "<ymax>229</ymax>")
    ann, images = voc_set(tmp_path, xml, size=(640, 480))
    run(ann, images, tmp_path / "out.jsonl", "--tasks", "OD")
    record = lines(tmp_path / "out.jsonl")[0]
    truth = {"drop": [133, 7, 290, 229], "wrinkle": [5, 31, 64, 48]}
    # through the tokenizer as a generation would come out: ids -> text with special tokens -> parsed boxes
    ids = processor.tokenizer(record["suffix"])["input_ids"]
    text = "</s>" + processor.tokenizer.decode(ids, skip_special_tokens=False)
    parsed = processor.post_process_generation(text, task="<OD>", image_size=(640, 480))["<OD>"]
    assert parsed["labels"] == ["drop", "wrinkle"]
    for label, box in zip(parsed["labels"], parsed["bboxes"], strict=True):
        per_bin = [0.64, 0.48, 0.64, 0.48]
        # within one bin of the VOC box (dequantize takes the bin centre and truncates to whole pixels)
        assert all(abs(b - t) <= p + 1 for b, t, p in zip(box, truth[label], per_bin, strict=True)), (
            label,
            box,
        )
    # the loc tokens survive the tokenizer: the decoded text holds exactly the bins written
    assert parse_suffix(text) == parse_suffix(record["suffix"])


def test_flip_mirrors_boxes_and_images_and_twice_is_identity(tmp_path):
    rng = random.Random(1)
    for _ in range(50):
        w = rng.randrange(10, 500)
        x1 = rng.uniform(0, w - 1)
        box = (x1, rng.uniform(0, 9), rng.uniform(x1, w), 10.0)
        assert flip_box(flip_box(box, w), w) == pytest.approx(box)
        assert flip_box(box, w)[0] == pytest.approx(w - box[2])
    ann, images = voc_set(tmp_path)
    counts = run(ann, images, tmp_path / "out.jsonl", "--flip")
    records = lines(tmp_path / "out.jsonl")
    assert counts["flipped"] == 1 and len(records) == 6
    flipped = [r for r in records if r["image"] == "flipped_0 (1).jpg"]
    od = next(r for r in flipped if r["prefix"] == "<OD>")
    # drop (13..29 of 64) mirrors to 35..51: bins 546, 796; wrinkle (5..64) to 0..59: bins 0, 921
    assert parse_suffix(od["suffix"])[0].bins == ((546, 145, 796, 458),)
    assert parse_suffix(od["suffix"])[1].bins == ((0, 645, 921, 999),)
    with Image.open(images / "0 (1).jpg") as original, Image.open(images / "flipped_0 (1).jpg") as mirrored:
        assert (
            mirrored.getpixel((62, 1))[0] > 200 > mirrored.getpixel((1, 1))[0]
        )  # the red corner moved right
        assert ImageOps.mirror(mirrored).getpixel((1, 1))[0] == pytest.approx(
            original.getpixel((1, 1))[0], abs=30
        )


BAD = {
    "bad XML": ("<annotation><object></annotation>", r"a\.xml:1: not valid XML"),
    "x1 > x2": (
        GOLDEN_XML.replace("<xmin>13</xmin>", "<xmin>40</xmin>"),
        r"a\.xml: object 1 \('drop'\).*x1 >= x2",
    ),
    "outside": (
        GOLDEN_XML.replace("<ymax>22</ymax>", "<ymax>60</ymax>"),
        r"a\.xml: object 1 \('drop'\).*outside the image",
    ),
    "missing image": (
        GOLDEN_XML.replace("0 (1).jpg", "nope.jpg"),
        r"a\.xml: its image 'nope\.jpg' is not in",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_voc_input_names_the_file(tmp_path, case):
    xml, pattern = BAD[case]
    ann, images = voc_set(tmp_path, xml)
    with pytest.raises(DataError, match=pattern):
        run(ann, images, tmp_path / "out.jsonl")
    counts = run(ann, images, tmp_path / "skip.jsonl", "--skip-bad")
    assert counts["skipped"] == 1 and counts["lines"] == 0


def test_unknown_class_with_classes_and_unknown_task(tmp_path):
    ann, images = voc_set(tmp_path)
    with pytest.raises(DataError, match=r"a\.xml: object 0: class 'wrinkle' is not among --classes drop"):
        run(ann, images, tmp_path / "out.jsonl", "--classes", "drop")
    assert run(ann, images, tmp_path / "ok.jsonl", "--classes", "drop,wrinkle")["lines"] == 3
    with pytest.raises(DataError, match="unknown task"):
        run(ann, images, tmp_path / "out.jsonl", "--tasks", "OD,SEGMENT")


def test_a_conversion_that_fails_on_the_fifth_file_leaves_the_previous_out_whole(tmp_path):
    """The JSONL replaces --out only once every file converted: a failure half way keeps the old file intact."""
    ann, images = voc_set(tmp_path)
    for i in range(2, 6):
        (ann / f"{chr(ord('a') + i - 1)}.xml").write_text(GOLDEN_XML)  # b.xml .. e.xml: 5 files in all
    out = tmp_path / "train.jsonl"
    run(ann, images, out)
    good = out.read_bytes()
    assert len(lines(out)) == 15
    (ann / "e.xml").write_text(GOLDEN_XML.replace("<xmin>5</xmin>", "<xmin>70</xmin>"))  # the 5th file is bad
    with pytest.raises(DataError, match=r"e\.xml"):
        run(ann, images, out, "--flip")
    assert out.read_bytes() == good  # not truncated to the 4 files before the bad one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Annotations", "JPEGImages", "train.jsonl"]
