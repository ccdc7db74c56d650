"""`python -m trainers.predict` on a captioning run: it captions plain images with the run's own generation
settings (seed 003's inference script generated at max_length 30 while its evaluation used 60), and draws
the caption under each image."""

from __future__ import annotations

import json
import shutil

import torch
from PIL import Image

from conftest import SHAPES, tiny_recipe
from trainers.run import complete_run, setup_run


def test_predict_captions_with_the_runs_generation_settings_and_draws_them(tmp_path, capsys):
    from transformers import BlipForConditionalGeneration, BlipProcessor

    from trainers.predict import main

    run = tmp_path / "run"
    complete_run(setup_run(tiny_recipe(run, epochs=1)))  # evaluation: 2 beams, max_length 12
    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        shutil.copy(SHAPES / "images" / f"val_{i:05d}.png", images)
    out = tmp_path / "preds.jsonl"
    assert main([str(run), "--images", str(images), "--out", str(out), "--draw"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]

    model = BlipForConditionalGeneration.from_pretrained(run / "best").eval()
    processor = BlipProcessor.from_pretrained(run / "best")
    pictures = [Image.open(images / f"val_{i:05d}.png").convert("RGB") for i in range(3)]
    pixels = processor(images=pictures, return_tensors="pt")["pixel_values"]

    def generated(**settings) -> list[str]:
        with torch.no_grad():
            ids = model.generate(
                pixel_values=pixels,
                no_repeat_ngram_size=2,
                repetition_penalty=1.1,
                length_penalty=1.0,
                early_stopping=True,
                **settings,
            )
        return [t.strip() for t in processor.batch_decode(ids, skip_special_tokens=True)]

    assert [r["caption"] for r in rows] == generated(num_beams=2, max_length=12)
    assert [r["caption"] for r in rows] != generated(num_beams=5, max_length=60)  # the defaults differ here
    assert [r["file"] for r in rows] == [str(images / f"val_{i:05d}.png") for i in range(3)]
    drawn = Image.open(tmp_path / "preds_drawn" / "val_00000.png")
    assert drawn.width >= 256 and drawn.height > drawn.width  # the image scaled up, the caption band under it
    assert main([str(run), "--images", str(images), "--out", str(out), "--max_length", "4"]) == 0
    short = [json.loads(line)["caption"] for line in out.read_text().splitlines()]
    assert short == generated(num_beams=2, max_length=4)
    assert main([str(run), "--images", str(images), "--num_beams", "x"]) == 2
    assert "--num_beams is a whole number" in capsys.readouterr().err
