"""Skeletons drawn on images: the per-evaluation PNG (true vs predicted) and `python -m trainers.predict --draw`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

TRUE_COLOUR = (0, 170, 0)
PREDICTED_COLOUR = (220, 30, 30)


BOX_COLOUR = (40, 110, 230)


def draw_skeleton(
    image: Image.Image,
    keypoints: np.ndarray | Sequence[Sequence[float]],
    links: Sequence[tuple[int, int]],
    colour: tuple[int, int, int],
    scale: int = 1,
    visible: Sequence[bool] | None = None,
) -> Image.Image:
    """A copy of `image` (enlarged `scale` times, nearest) with keypoints (pixel centres at integers) as dots
    and `links` as lines; keypoints with `visible` False are left out."""
    return draw_skeletons(
        image, [keypoints], links, colour, scale, [visible] if visible is not None else None
    )


def draw_skeletons(
    image: Image.Image,
    skeletons: Sequence[np.ndarray | Sequence[Sequence[float]]],
    links: Sequence[tuple[int, int]],
    colour: tuple[int, int, int],
    scale: int = 1,
    visible: Sequence[Sequence[bool] | None] | None = None,
    boxes: Sequence[Sequence[float]] | None = None,
) -> Image.Image:
    """`draw_skeleton` for several instances on one copy of `image`; each instance's x, y, w, h box (`boxes`)
    outlined in `BOX_COLOUR` under its skeleton."""
    out = image.convert("RGB")
    out = (
        out.resize((out.width * scale, out.height * scale), Image.Resampling.NEAREST)
        if scale > 1
        else out.copy()
    )
    pen = ImageDraw.Draw(out)
    width = max(1, scale // 2)
    for x, y, w, h in boxes or ():
        pen.rectangle([x * scale, y * scale, (x + w) * scale - 1, (y + h) * scale - 1], outline=BOX_COLOUR)
    radius = max(1.5, scale * 0.75)
    for i, keypoints in enumerate(skeletons):
        points = [
            ((float(x) + 0.5) * scale, (float(y) + 0.5) * scale) for x, y in np.asarray(keypoints)[:, :2]
        ]
        shown = list(visible[i]) if visible is not None and visible[i] is not None else [True] * len(points)
        for a, b in links:
            if shown[a] and shown[b]:
                pen.line([points[a], points[b]], fill=colour, width=width)
        for (x, y), show in zip(points, shown, strict=True):
            if show:
                pen.ellipse((x - radius, y - radius, x + radius, y + radius), fill=colour)
    return out
