"""Annotations drawn on images, shared by the tasks that draw: boxes with their labels (detection's per-evaluation
PNG and `python -m trainers.predict --draw`), the sheet of (true, predicted) panel pairs that detection's
boxes and pose's skeletons are shown on, and wrapped text with visible word gaps (captions, queries). It sits
with the data readers (the mechanics floor) so that a task draws without importing a sibling task."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

TRUE_COLOUR = (0, 170, 0)
PALETTE = ((220, 30, 30), (30, 90, 230), (230, 150, 0), (160, 40, 200), (0, 160, 170), (120, 120, 120))
FONT_SIZE = 13  # px: Pillow's bundled font, legible on a sheet viewed at 100%


def font(size: int = FONT_SIZE) -> ImageFont.FreeTypeFont:
    """Pillow's bundled scalable font (no system font needed)."""
    return ImageFont.load_default(size=size)


def line_height(face: ImageFont.FreeTypeFont) -> int:
    return int(face.size) + 4


def word_gap(face: ImageFont.FreeTypeFont) -> float:
    """The space drawn between words: the bundled font's own space is 2-3 px at these sizes, which reads as
    no space at all ("rightofa"), so words are placed one by one at least 0.45 em apart."""
    return max(face.getlength(" "), 0.45 * face.size)


def wrap(text: str, width: float, face: ImageFont.FreeTypeFont) -> list[list[str]]:
    """`text`'s words in lines no wider than `width` px (a single longer word gets a line of its own)."""
    lines: list[list[str]] = []
    current: list[str] = []
    used = 0.0
    for word in text.split():
        size = face.getlength(word)
        if current and used + word_gap(face) + size > width:
            lines.append(current)
            current, used = [], 0.0
        used += (word_gap(face) if current else 0.0) + size
        current.append(word)
    return [*lines, current] if current else lines or [[]]


def text_block_height(text: str, width: float, face: ImageFont.FreeTypeFont) -> int:
    return line_height(face) * len(wrap(text, width, face))


def write(
    pen: ImageDraw.ImageDraw,
    xy: tuple[float, float],
    text: str,
    width: float,
    face: ImageFont.FreeTypeFont,
    fill: tuple[int, int, int] = (0, 0, 0),
) -> int:
    """`text` wrapped to `width` px at `xy`, words `word_gap` apart; returns the height drawn."""
    x0, y = xy
    lines = wrap(text, width, face)
    for words in lines:
        x = x0
        for word in words:
            pen.text((x, y), word, fill=fill, font=face)
            x += face.getlength(word) + word_gap(face)
        y += line_height(face)
    return line_height(face) * len(lines)


def draw_boxes(
    image: Image.Image,
    boxes: Sequence[Sequence[float]],
    labels: Sequence[int],
    classes: Sequence[str],
    scores: Sequence[float] | None = None,
    colour: tuple[int, int, int] | None = None,
    width: int = 1,
    scale: int = 1,
) -> Image.Image:
    """A copy of `image` (enlarged `scale` times, nearest: the pixels stay visible) with each box outlined
    and labelled (`name score`); colour per class unless given."""
    out = image.convert("RGB")
    out = (
        out.resize((out.width * scale, out.height * scale), Image.Resampling.NEAREST)
        if scale > 1
        else out.copy()
    )
    pen = ImageDraw.Draw(out)
    for i, (box, label) in enumerate(zip(boxes, labels, strict=True)):
        ink = colour or PALETTE[int(label) % len(PALETTE)]
        box = [float(v) * scale for v in box]
        pen.rectangle(box, outline=ink, width=width)
        name = classes[int(label)] if 0 <= int(label) < len(classes) else str(label)
        text = f"{name} {scores[i]:.2f}" if scores is not None else name
        pen.text((box[0] + 2, box[1] + 1), text, fill=ink)
    return out


def comparison_grid(
    panels: Sequence[tuple[Image.Image, Image.Image]],
    path: Path,
    title: str = "left: true boxes (green)   right: predicted boxes",
) -> Path:
    """Rows of (true, predicted) panels on one sheet, under `title`."""
    cells = list(panels)
    width = max(t.width + p.width for t, p in cells) + 12
    height = sum(max(t.height, p.height) for t, p in cells) + 20 + 4 * len(cells)
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    pen = ImageDraw.Draw(sheet)
    pen.text((4, 4), title, fill=(0, 0, 0))
    y = 20
    for t, p in cells:
        sheet.paste(t, (4, y))
        sheet.paste(p, (8 + t.width, y))
        y += max(t.height, p.height) + 4
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path
