"""`eval/captions.png`, written by the captioning task's `save_artifacts` hook after each evaluation: read back,
it holds the first `evaluation.plot_images` val images, each prediction in its own band (identical bands for
identical predictions, different ones where they differ), and words drawn visibly apart."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from trainers.data.draw import font, write
from trainers.models.blip import TinyBlipSpec, build_tiny_processor
from trainers.tasks.captioning.config import CaptionEval
from trainers.tasks.captioning.data import CaptionJsonDataset
from trainers.tasks.captioning.draw import PREDICTED_INK, REFERENCE_INK, CaptionCell, caption_sheet, captioned
from trainers.tasks.captioning.task import CaptioningTask

COLOURS = ((220, 40, 40), (40, 60, 220), (40, 170, 60), (230, 200, 30), (150, 60, 190), (0, 0, 0))
PREDICTIONS = {
    0: "a red square",
    1: "a blue circle above a green triangle",
    2: "a red square",
    3: "a green triangle",
    4: "a yellow circle",
    5: "a black square",
}


@pytest.fixture(scope="module")
def val_set(tmp_path_factory) -> CaptionJsonDataset:
    root = tmp_path_factory.mktemp("val")
    (root / "img").mkdir()
    captions = {}
    for i, colour in enumerate(COLOURS):
        Image.new("RGB", (32, 32), colour).save(root / "img" / f"{i}.png")
        captions[f"{i}.png"] = [f"reference {i} one", f"reference {i} two"]
    (root / "val.json").write_text(json.dumps(captions))
    processor = build_tiny_processor(TinyBlipSpec())
    return CaptionJsonDataset(root / "val.json", root / "img", processor.image_processor)


def _ink(picture: Image.Image, colour: tuple[int, int, int]) -> int:
    return sum(1 for pixel in picture.get_flattened_data() if pixel == colour)


def test_the_hook_draws_the_first_plot_images_with_a_band_per_prediction(val_set, tmp_path: Path):
    task = CaptioningTask()
    task.settings = CaptionEval(plot_images=4)
    task.save_artifacts(PREDICTIONS, val_set, tmp_path / "eval")
    written = Image.open(tmp_path / "eval" / "captions.png").convert("RGB")

    # The same four cells drawn directly give the same pixels: the hook drew the first 4 images, no more.
    cells = [CaptionCell(val_set._load_image(i), PREDICTIONS[i], val_set.references[i]) for i in range(4)]
    layout = caption_sheet(cells, tmp_path / "direct.png")
    assert written.size == layout.size and layout.size[0] == 4 * 260
    assert written.tobytes() == Image.open(tmp_path / "direct.png").convert("RGB").tobytes()

    # Each image is its own val image (enlarged), in its own cell.
    for i, box in enumerate(layout.images):
        assert written.crop(box).getpixel((box[2] - box[0] - 2, 2)) == COLOURS[i]

    bands = [written.crop(box) for box in layout.predictions]
    assert all(_ink(band, PREDICTED_INK) > 20 for band in bands)  # the prediction is written, in red
    assert bands[0].tobytes() == bands[2].tobytes()  # the same prediction: the same band
    assert bands[0].tobytes() != bands[1].tobytes()  # different predictions: different bands
    assert bands[0].tobytes() != bands[3].tobytes()
    assert _ink(written, REFERENCE_INK) > 8 * 20  # two reference lines per cell, in green

    task.settings = CaptionEval(plot_images=0)
    task.save_artifacts(PREDICTIONS, val_set, tmp_path / "none")
    assert not (tmp_path / "none" / "captions.png").exists()


def _ink_width(text: str) -> int:
    picture = Image.new("RGB", (400, 30), "white")
    write(ImageDraw.Draw(picture), (0, 0), text, 400, font())
    return picture.convert("L").point(lambda v: 255 if v < 200 else 0).getbbox()[2]


def test_words_are_drawn_visibly_apart():
    """The bundled font's own space is 2-3 px ("right of a" read as "rightofa" on the old picture): each gap
    is now at least 5 px, so the two gaps add at least 10 px over the words drawn together."""
    assert _ink_width("right of a") - _ink_width("rightofa") >= 10


def test_predict_draw_wraps_the_caption_under_the_image():
    image = Image.new("RGB", (64, 64), (40, 60, 220))
    drawn = captioned(image, "a blue circle above a green triangle right of a red square left of it")
    assert drawn.width == 256 and drawn.height > 256 + 2 * 17  # enlarged 4x, two or more text lines
    assert drawn.getpixel((10, 10)) == (40, 60, 220)
