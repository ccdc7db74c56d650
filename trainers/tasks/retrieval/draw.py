"""`eval/retrieval.png` after each evaluation: for the first val images, the image's first caption as the query,
the k images it ranks highest among all val images, the caption's own image framed green (a hit, as R@k counts
it), the others grey."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageOps

from trainers.data.draw import font, text_block_height, write

THUMB = 96  # px, the side of each retrieved image
FRAME = 5  # px of green (hit) or grey (miss) around it
HIT, MISS = (0, 170, 0), (170, 170, 170)
QUERY_WIDTH = 280  # px of the query text column


@dataclass(frozen=True)
class QueryRow:
    """One text query: its caption, the retrieved images best first, which of them is the caption's own."""

    caption: str
    retrieved: Sequence[Image.Image]
    hits: Sequence[bool]


@dataclass(frozen=True)
class RetrievalLayout:
    """Pixel boxes `(left, top, right, bottom)` of each row's framed thumbnails, for reading the sheet back."""

    size: tuple[int, int]
    frames: list[list[tuple[int, int, int, int]]]


def retrieval_sheet(rows: Sequence[QueryRow], path: Path, k: int) -> RetrievalLayout:
    """One row per query: the caption (wrapped, left), then its `k` retrieved images as framed thumbnails,
    each labelled with its rank (and "own image" where it is the caption's), then "hit@k" or "miss@k"."""
    face, pad = font(), 8
    cell = THUMB + 2 * FRAME
    label = int(face.size) + 6
    width = pad + QUERY_WIDTH + k * (cell + pad) + 90
    heights = [
        max(cell + label, text_block_height(r.caption, QUERY_WIDTH - pad, face)) + 2 * pad for r in rows
    ]
    title = 26
    sheet = Image.new("RGB", (width, title + sum(heights)), "white")
    pen = ImageDraw.Draw(sheet)
    write(
        pen,
        (pad, 6),
        f"text -> image: each val image's first caption against all val images, top {k}; "
        "its own image framed green",
        width - 2 * pad,
        face,
    )
    frames: list[list[tuple[int, int, int, int]]] = []
    top = title
    for row, height in zip(rows, heights, strict=True):
        y = top + pad
        pen.line((0, top, width, top), fill=(225, 225, 225))
        write(pen, (pad, y), row.caption, QUERY_WIDTH - pad, face)
        boxes = []
        for n, (image, hit) in enumerate(zip(row.retrieved, row.hits, strict=True)):
            x = pad + QUERY_WIDTH + n * (cell + pad)
            thumb = ImageOps.pad(image.convert("RGB"), (THUMB, THUMB), color="white")
            sheet.paste(ImageOps.expand(thumb, border=FRAME, fill=HIT if hit else MISS), (x, y))
            boxes.append((x, y, x + cell, y + cell))
            pen.text(
                (x, y + cell + 2),
                f"{n + 1}" + ("  own image" if hit else ""),
                font=face,
                fill=HIT if hit else (90, 90, 90),
            )
        found = any(row.hits)
        pen.text(
            (pad + QUERY_WIDTH + k * (cell + pad), y + cell // 2 - 8),
            f"{'hit' if found else 'miss'}@{k}",
            font=face,
            fill=HIT if found else (200, 30, 30),
        )
        frames.append(boxes)
        top += height
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return RetrievalLayout(sheet.size, frames)
