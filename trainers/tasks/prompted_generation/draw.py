"""Boxes drawn on images: one prediction (`Task.draw`) and the per-evaluation sheet of predicted vs true boxes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

TRUE = (40, 220, 60)
PREDICTED = (235, 40, 40)


def draw_boxes(
    image: Image.Image,
    boxes: Sequence[Sequence[float]],
    labels: Sequence[str],
    colour=PREDICTED,
    scale: float = 1.0,
    base: Image.Image | None = None,
) -> Image.Image:
    """`image` (a copy, scaled by `scale`) with each box outlined and labelled. A generated box may come with its
    corners swapped (x2 < x1: the model wrote them so); it is drawn between them all the same."""
    out = (
        base
        if base is not None
        else image.convert("RGB").resize(
            (round(image.width * scale), round(image.height * scale)), Image.Resampling.NEAREST
        )
    )
    draw = ImageDraw.Draw(out)
    for box, label in zip(boxes, labels, strict=True):
        x1, x2 = sorted((box[0] * scale, box[2] * scale))
        y1, y2 = sorted((box[1] * scale, box[3] * scale))
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=max(1, round(scale)))
        draw.text((x1 + 2, y1 + 1), str(label), fill=colour)
    return out


def sheet(rows: Sequence[tuple[Image.Image, Any, Any]], path: Path, side: int = 192) -> Path:
    """A PNG of (image, true sample, prediction) tiles: true boxes green, predicted red, a legend on top."""
    tiles = []
    for image, sample, prediction in rows:
        scale = side / max(image.size)
        tile = draw_boxes(
            image, [b for _, b in sample.boxes()], [label for label, _ in sample.boxes()], TRUE, scale
        )
        tiles.append(
            draw_boxes(image, prediction["boxes"], prediction["labels"], PREDICTED, scale, base=tile)
        )
    legend = 16
    canvas = Image.new("RGB", (max(1, len(tiles)) * (side + 4), side + legend), (255, 255, 255))
    ImageDraw.Draw(canvas).text((4, 2), "green: true   red: predicted", fill=(0, 0, 0))
    for i, tile in enumerate(tiles):
        canvas.paste(tile, (i * (side + 4), legend))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path
