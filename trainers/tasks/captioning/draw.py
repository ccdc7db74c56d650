"""A predicted caption drawn under its image (`python -m trainers.predict RUN --draw`)."""

from __future__ import annotations

import textwrap

from PIL import Image, ImageDraw, ImageFont


def captioned(image: Image.Image, caption: str, min_side: int = 256) -> Image.Image:
    """`image` scaled (nearest, so small demo images stay crisp) to at least `min_side` px, on top of a white
    band holding `caption` wrapped to the image's width."""
    scale = max(1, -(-min_side // max(image.size)))
    picture = image.convert("RGB").resize((image.width * scale, image.height * scale), Image.NEAREST)
    font = ImageFont.load_default()
    lines = textwrap.wrap(caption, width=max(12, picture.width // 7)) or [""]
    band = 6 + 14 * len(lines)
    canvas = Image.new("RGB", (picture.width, picture.height + band), "white")
    canvas.paste(picture, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(lines):
        draw.text((4, picture.height + 3 + 14 * i), line, fill="black", font=font)
    return canvas
