"""A generated answer drawn under its image (`python -m trainers.predict RUN --draw`)."""

from __future__ import annotations

import textwrap

from PIL import Image, ImageDraw, ImageFont


def answered(image: Image.Image, text: str, min_side: int = 256) -> Image.Image:
    """`image` scaled up (nearest) to at least `min_side` px above a white band holding `text`."""
    scale = max(1, -(-min_side // max(image.size)))
    picture = image.convert("RGB").resize((image.width * scale, image.height * scale), Image.NEAREST)
    lines = textwrap.wrap(text, width=max(12, picture.width // 7)) or [""]
    canvas = Image.new("RGB", (picture.width, picture.height + 6 + 14 * len(lines)), "white")
    canvas.paste(picture, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(lines):
        draw.text((4, picture.height + 3 + 14 * i), line, fill="black", font=ImageFont.load_default())
    return canvas
