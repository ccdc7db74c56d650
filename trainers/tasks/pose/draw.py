"""Skeletons drawn on images: the per-evaluation PNG (true vs predicted) and `python -m trainers.predict --draw`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

TRUE_COLOUR = (0, 170, 0)
PREDICTED_COLOUR = (220, 30, 30)


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
    out = image.convert("RGB")
    out = (
        out.resize((out.width * scale, out.height * scale), Image.Resampling.NEAREST)
        if scale > 1
        else out.copy()
    )
    points = [((float(x) + 0.5) * scale, (float(y) + 0.5) * scale) for x, y in np.asarray(keypoints)[:, :2]]
    shown = list(visible) if visible is not None else [True] * len(points)
    pen = ImageDraw.Draw(out)
    width = max(1, scale // 2)
    for a, b in links:
        if shown[a] and shown[b]:
            pen.line([points[a], points[b]], fill=colour, width=width)
    radius = max(1.5, scale * 0.75)
    for (x, y), show in zip(points, shown, strict=True):
        if show:
            pen.ellipse((x - radius, y - radius, x + radius, y + radius), fill=colour)
    return out
