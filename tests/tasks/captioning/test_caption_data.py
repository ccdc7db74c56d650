"""Caption data: the synthetic shapes generator, the JSON caption dataset and the BLIP collator."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
import torch
from PIL import Image

from trainers.models.blip import BLIP_BOS_TOKEN_ID, BLIP_SEP_TOKEN_ID, TinyBlipSpec, build_tiny_processor
from trainers.tasks.captioning.data import CaptionCollator, CaptionJsonDataset, DataError
from trainers.tasks.captioning.shapes import COLORS, SHAPES, generate_shapes_dataset, make_scene, render_scene

REPO = Path(__file__).resolve().parents[3]
CAPTION_RE = re.compile(
    r"^a (red|green|blue|yellow) (circle|square|triangle) (above|below|left of|right of) "
    r"a (red|green|blue|yellow) (circle|square|triangle)$"
)


@pytest.fixture(scope="module")
def processor():
    return build_tiny_processor(TinyBlipSpec())


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _write_json(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def _write_images(image_dir: Path, names: list[str], mode: str = "RGB") -> None:
    image_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.new(mode, (20, 16)).save(image_dir / name)


# ------------------------------------------------------------------------------------------------ shapes


def test_shapes_generator_is_deterministic_and_captions_follow_the_grammar(tmp_path: Path) -> None:
    a = generate_shapes_dataset(tmp_path / "a", n_train=12, n_val=4, image_size=32, seed=3)
    b = generate_shapes_dataset(tmp_path / "b", n_train=12, n_val=4, image_size=32, seed=3)
    assert _files(a.root) == _files(b.root)
    train = json.loads(a.train_json.read_text())
    val = json.loads(a.val_json.read_text())
    assert len(train) == 12 and len(val) == 4 and not set(train) & set(val)
    for caption in [*train.values(), *val.values()]:
        match = CAPTION_RE.match(caption)
        assert match, caption
        first = (list(COLORS).index(match[1]), SHAPES.index(match[2]))
        second = (list(COLORS).index(match[4]), SHAPES.index(match[5]))
        assert first < second, f"objects not in canonical order, so the caption is ambiguous: {caption}"
    with Image.open(a.image_dir / next(iter(train))) as image:
        assert image.size == (32, 32) and image.mode == "RGB"

    other = generate_shapes_dataset(tmp_path / "c", n_train=12, n_val=4, image_size=32, seed=4)
    assert json.loads(other.train_json.read_text()) != train


def test_shapes_generator_skips_complete_output_and_repairs_partial_output(tmp_path: Path) -> None:
    ds = generate_shapes_dataset(tmp_path, n_train=6, n_val=2, image_size=32)
    before = _files(tmp_path)
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.png")}
    generate_shapes_dataset(tmp_path, n_train=6, n_val=2, image_size=32)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.png")} == stamps, (
        "complete output was rewritten"
    )

    victim = ds.image_dir / "train_00003.png"
    victim.unlink()
    generate_shapes_dataset(tmp_path, n_train=6, n_val=2, image_size=32)
    assert _files(tmp_path) == before

    generate_shapes_dataset(tmp_path, n_train=6, n_val=2, image_size=48)  # a new size is not "complete"
    with Image.open(victim) as image:
        assert image.size == (48, 48)


def test_shape_geometry_matches_the_caption() -> None:
    for i in range(200):
        scene = make_scene(random.Random(i))
        a, b = scene.first, scene.second
        dx, dy = b.cx - a.cx, b.cy - a.cy  # image y grows downwards
        expected = {
            "above": dy > abs(dx),
            "below": -dy > abs(dx),
            "left of": dx > abs(dy),
            "right of": -dx > abs(dy),
        }
        assert expected[scene.relation], (scene.caption, a, b)
        assert (dx**2 + dy**2) ** 0.5 > a.radius + b.radius, "shapes overlap"
        image = render_scene(scene, 64)
        for obj in (a, b):  # the centre pixel carries the object's colour
            pixel = image.getpixel((int(obj.cx * 64), int(obj.cy * 64)))
            assert max(abs(p - q) for p, q in zip(pixel, obj.rgb, strict=True)) <= 2, (scene.caption, obj)


def test_shipped_sample_set_is_what_the_generator_writes(tmp_path: Path) -> None:
    shipped = REPO / "data" / "shapes"
    assert shipped.is_dir(), "data/shapes is missing: python -m trainers.tasks.captioning.shapes data/shapes"
    fresh = generate_shapes_dataset(tmp_path)
    assert _files(shipped) == _files(fresh.root)
    assert sum(len(b) for b in _files(shipped).values()) < 1_500_000


# ----------------------------------------------------------------------------------------------- dataset


def test_dataset_items_references_and_rgb_conversion(tmp_path: Path, processor) -> None:
    _write_images(tmp_path / "img", ["a.png"], mode="L")
    _write_images(tmp_path / "img", ["b.png"], mode="RGBA")
    captions = _write_json(
        tmp_path / "c.json", {"a.png": "a red circle", "b.png": ["first one", "second one"]}
    )
    ds = CaptionJsonDataset(captions, tmp_path / "img", processor.image_processor)
    assert len(ds) == 2
    assert ds.references == [["a red circle"], ["first one", "second one"]]
    item = ds[1]
    assert item["caption"] == "first one" and item["index"] == 1
    assert item["pixel_values"].shape == (3, 32, 32) and item["pixel_values"].dtype == torch.float32


def test_dataset_reports_missing_images_with_count_and_first_five(tmp_path: Path, processor) -> None:
    names = [f"{i}.png" for i in range(9)]
    _write_images(tmp_path / "img", names[:2])
    captions = _write_json(tmp_path / "c.json", {n: "x" for n in names})
    with pytest.raises(DataError) as info:
        CaptionJsonDataset(captions, tmp_path / "img", processor.image_processor)
    message = str(info.value)
    assert str(captions) in message and "7 of 9" in message and "and 2 more" in message
    assert "'2.png'" in message and "'6.png'" in message and "'7.png'" not in message
    assert isinstance(info.value, ValueError)


def test_dataset_reports_bad_json_with_position(tmp_path: Path, processor) -> None:
    captions = tmp_path / "c.json"
    captions.write_text('{\n  "a.png": "ok",\n  "b.png" "missing colon"\n}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"c\.json: not valid JSON: .* line 3 column 11"):
        CaptionJsonDataset(captions, tmp_path, processor.image_processor)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ({}, "empty"),
        (["a.png"], "top level is a JSON list"),
        ({"a.png": 3, "b.png": []}, "2 entries have no usable caption"),
        ({"a.png": "  "}, "1 entry has no usable caption"),
    ],
)
def test_dataset_rejects_malformed_mappings(
    tmp_path: Path, processor, content: object, expected: str
) -> None:
    captions = _write_json(tmp_path / "c.json", content)
    with pytest.raises(DataError, match=expected) as info:
        CaptionJsonDataset(captions, tmp_path, processor.image_processor)
    assert str(captions) in str(info.value)


def test_dataset_missing_files_and_unreadable_image(tmp_path: Path, processor) -> None:
    with pytest.raises(DataError, match="caption file not found"):
        CaptionJsonDataset(tmp_path / "nope.json", tmp_path, processor.image_processor)
    captions = _write_json(tmp_path / "c.json", {"a.png": "x"})
    with pytest.raises(DataError, match="image directory not found"):
        CaptionJsonDataset(captions, tmp_path / "nope", processor.image_processor)
    (tmp_path / "a.png").write_bytes(b"not a png")
    ds = CaptionJsonDataset(captions, tmp_path, processor.image_processor)  # lazy: not decoded yet
    with pytest.raises(DataError, match=r"a\.png: cannot read the image"):
        ds[0]


# ---------------------------------------------------------------------------------------------- collator


def _features(captions: list[str]) -> list[dict]:
    return [
        {"pixel_values": torch.full((3, 4, 4), float(i)), "caption": c, "index": 10 + i}
        for i, c in enumerate(captions)
    ]


def test_collator_bos_labels_and_padding(processor) -> None:
    collator = CaptionCollator(processor.tokenizer)
    batch = collator(_features(["a red circle above a blue square", "a cat"]))
    assert set(batch) == {"pixel_values", "input_ids", "attention_mask", "labels"}
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    assert ids.shape == (2, 9)  # [DEC] + 7 words + [SEP], padded to the longest
    assert ids[:, 0].tolist() == [BLIP_BOS_TOKEN_ID] * 2
    assert ids[0].tolist() == [BLIP_BOS_TOKEN_ID, 1037, 2417, 4418, 2682, 1037, 2630, 2675, BLIP_SEP_TOKEN_ID]
    assert mask[1].tolist() == [1, 1, 1, 1, 0, 0, 0, 0, 0]
    assert ids[1, 3].item() == BLIP_SEP_TOKEN_ID and ids[1, 4:].eq(0).all()
    assert labels[1, 4:].eq(-100).all()
    assert torch.equal(labels[mask == 1], ids[mask == 1])  # not shifted: the model shifts
    assert batch["pixel_values"].shape == (2, 3, 4, 4) and batch["pixel_values"][1].eq(1).all()


def test_collator_truncation_index_and_bos_override(processor) -> None:
    collator = CaptionCollator(processor.tokenizer, max_length=5, bos_token_id=7, include_index=True)
    batch = collator(_features(["a red circle above a blue square", "a cat"]))
    assert batch["input_ids"].shape == (2, 5)
    assert batch["input_ids"][:, 0].tolist() == [7, 7]
    assert batch["input_ids"][0, -1].item() == BLIP_SEP_TOKEN_ID  # truncation keeps the end token
    assert batch["index"].tolist() == [10, 11]


def test_collator_requires_a_bos_token(processor) -> None:
    class NoBos:
        bos_token_id = None

    with pytest.raises(ValueError, match="bos"):
        CaptionCollator(NoBos())
    assert CaptionCollator(processor.tokenizer).bos_token_id == BLIP_BOS_TOKEN_ID
