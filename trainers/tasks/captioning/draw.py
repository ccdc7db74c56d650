"""Captions drawn with their images: one predicted caption under its image (`python -m trainers.predict RUN
--draw`) and, after each evaluation, `eval/captions.png`, the first val images each with its predicted caption
above its reference captions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from trainers.data.draw import font, text_block_height, write

PREDICTED_INK = (200, 30, 30)
REFERENCE_INK = (0, 120, 0)
MAX_REFERENCES = 3  # per image on the sheet (a COCO image has 5): the cell stays a glance


def _enlarged(image: Image.Image, side: int) -> Image.Image:
    """`image` scaled (nearest, so small demo images stay crisp) to fit `side` px, never shrunk below 1x."""
    scale = max(1, side // max(image.size))
    return image.convert("RGB").resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)


def captioned(image: Image.Image, caption: str, min_side: int = 256) -> Image.Image:
    """`image` scaled (nearest) to at least `min_side` px, on top of a white band holding `caption` wrapped to
    the image's width, its words visibly apart."""
    scale = max(1, -(-min_side // max(image.size)))
    picture = image.convert("RGB").resize(
        (image.width * scale, image.height * scale), Image.Resampling.NEAREST
    )
    face = font()
    band = 6 + text_block_height(caption, picture.width - 8, face)
    canvas = Image.new("RGB", (picture.width, picture.height + band), "white")
    canvas.paste(picture, (0, 0))
    write(ImageDraw.Draw(canvas), (4, picture.height + 3), caption, picture.width - 8, face)
    return canvas


@dataclass(frozen=True)
class CaptionCell:
    """One val image with its predicted caption and its reference captions."""

    image: Image.Image
    prediction: str
    references: Sequence[str]


@dataclass(frozen=True)
class SheetLayout:
    """Where each cell's parts landed (pixel boxes `(left, top, right, bottom)`), for reading the sheet back."""

    size: tuple[int, int]
    images: list[tuple[int, int, int, int]]
    predictions: list[tuple[int, int, int, int]]


def caption_sheet(
    cells: Sequence[CaptionCell], path: Path, columns: int = 4, side: int = 160, cell_width: int = 260
) -> SheetLayout:
    """The cells in rows of `columns`: the image enlarged to about `side` px, under it "predicted: ..." (red),
    then each reference "reference: ..." (green), wrapped to the cell."""
    face, pad = font(), 8
    text_width = cell_width - 2 * pad
    parts = []
    for cell in cells:
        picture = _enlarged(cell.image, side)
        predicted = f"predicted: {cell.prediction or '(empty)'}"
        refs = [f"reference: {r}" for r in list(cell.references)[:MAX_REFERENCES]]
        height = picture.height + 4 + sum(text_block_height(t, text_width, face) for t in [predicted, *refs])
        parts.append((picture, predicted, refs, height))
    title_height = 26
    rows = [parts[i : i + columns] for i in range(0, len(parts), columns)]
    row_heights = [max(p[3] for p in row) + 2 * pad for row in rows]
    size = (
        columns * cell_width if len(parts) >= columns else max(1, len(parts)) * cell_width,
        title_height + sum(row_heights),
    )
    sheet = Image.new("RGB", size, "white")
    pen = ImageDraw.Draw(sheet)
    write(
        pen,
        (pad, 6),
        "first val images: predicted caption (red), reference captions (green)",
        size[0] - 2 * pad,
        face,
    )
    layout = SheetLayout(size, [], [])
    top = title_height
    for row, height in zip(rows, row_heights, strict=True):
        for n, (picture, predicted, refs, _) in enumerate(row):
            left = n * cell_width + pad
            y = top + pad
            sheet.paste(picture, (left, y))
            layout.images.append((left, y, left + picture.width, y + picture.height))
            y += picture.height + 4
            drawn = write(pen, (left, y), predicted, text_width, face, PREDICTED_INK)
            layout.predictions.append((left, y, left + text_width, y + drawn))
            y += drawn
            for ref in refs:
                y += write(pen, (left, y), ref, text_width, face, REFERENCE_INK)
        top += height
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return layout
