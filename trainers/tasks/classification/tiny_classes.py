"""A tiny, deterministic image-classification set: one dark filled shape per image, four classes.

It exists so classification can be trained and evaluated end to end offline, on CPU, in about a minute.
The class is the shape (circle, square, triangle, cross); colours, size, position and a small rotation are random
per image, so a model has to look at the outline, not at a colour. Images are 32x32 PNGs in an image folder
(`<split>/<class>/<n>.png`), the layout `ClassificationData` reads.

    python -m trainers.tasks.classification.tiny_classes data/tiny_classes --n-train 48 --n-val 16 --n-test 16
"""

from __future__ import annotations

import argparse
import math
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

CLASSES: tuple[str, ...] = ("circle", "cross", "square", "triangle")
SPLITS: tuple[str, ...] = ("train", "val", "test")
SUPERSAMPLE = 4  # draw large, then downsample: anti-aliased edges without depending on the renderer
RADIUS_RANGE = (0.30, 0.40)  # of the image side
CENTRE_JITTER = 0.08  # of the side, each axis: radius + jitter <= 0.48, so a shape never leaves the canvas
ROTATION_DEG = 10


@dataclass(frozen=True)
class TinyClasses:
    root: Path

    def split(self, name: str) -> Path:
        return self.root / name


def _colours(rng: random.Random) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """A light, slightly tinted background and a dark shape of any hue: the outline is always a clear edge."""
    background = tuple(rng.randrange(185, 256) for _ in range(3))
    foreground = tuple(rng.randrange(0, 110) for _ in range(3))
    return background, foreground  # type: ignore[return-value]


def _polygon(cx: float, cy: float, r: float, corners: int, rotation: float) -> list[tuple[float, float]]:
    return [
        (
            cx + r * math.cos(rotation + 2 * math.pi * k / corners),
            cy + r * math.sin(rotation + 2 * math.pi * k / corners),
        )
        for k in range(corners)
    ]


def _cross(cx: float, cy: float, r: float, rotation: float) -> list[tuple[float, float]]:
    arm = r * 0.35  # half the arm width
    points = [
        (arm, r),
        (arm, arm),
        (r, arm),
        (r, -arm),
        (arm, -arm),
        (arm, -r),
        (-arm, -r),
        (-arm, -arm),
        (-r, -arm),
        (-r, arm),
        (-arm, arm),
        (-arm, r),
    ]
    c, s = math.cos(rotation), math.sin(rotation)
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in points]


def _draw(
    shape: str,
    draw: ImageDraw.ImageDraw,
    cx: float,
    cy: float,
    r: float,
    rotation: float,
    fill,
    outline,
    width: int,
) -> None:
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill, outline=outline, width=width)
        return
    points = {
        "square": lambda: _polygon(cx, cy, r, 4, rotation + math.pi / 4),
        "triangle": lambda: _polygon(cx, cy, r, 3, rotation - math.pi / 2),
        "cross": lambda: _cross(cx, cy, r, rotation),
    }[shape]()
    draw.polygon(points, fill=fill, outline=outline, width=width)


def render(shape: str, rng: random.Random, size: int = 32) -> Image.Image:
    """One filled `shape`: random colours, size, position and a small rotation."""
    big = size * SUPERSAMPLE
    background, foreground = _colours(rng)
    r = rng.uniform(*RADIUS_RANGE) * big
    cx = big / 2 + rng.uniform(-1, 1) * CENTRE_JITTER * big
    cy = big / 2 + rng.uniform(-1, 1) * CENTRE_JITTER * big
    rotation = math.radians(rng.uniform(-ROTATION_DEG, ROTATION_DEG))
    image = Image.new("RGB", (big, big), background)
    _draw(shape, ImageDraw.Draw(image), cx, cy, r, rotation, fill=foreground, outline=foreground, width=1)
    return image.resize((size, size), Image.Resampling.LANCZOS)


def generate(root: Path, counts: dict[str, int], size: int = 32, seed: int = 0) -> TinyClasses:
    """Write `<root>/<split>/<class>/<n>.png`; the same arguments always give the same pixels."""
    root = Path(root)
    for split in SPLITS:
        shutil.rmtree(root / split, ignore_errors=True)
    for split_index, split in enumerate(SPLITS):
        for class_index, shape in enumerate(CLASSES):
            rng = random.Random(f"{seed}-{split_index}-{class_index}")
            folder = root / split / shape
            folder.mkdir(parents=True, exist_ok=True)
            for n in range(counts[split]):
                render(shape, rng, size).save(folder / f"{n:03d}.png", optimize=True)
    return TinyClasses(root)


def main(argv: list[str] | None = None, out: Callable[[str], None] = print) -> TinyClasses:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, nargs="?", default=Path("data/tiny_classes"))
    parser.add_argument("--n-train", type=int, default=48, help="images per class")
    parser.add_argument("--n-val", type=int, default=16)
    parser.add_argument("--n-test", type=int, default=16)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    result = generate(
        args.root, {"train": args.n_train, "val": args.n_val, "test": args.n_test}, args.size, args.seed
    )
    total = sum(p.stat().st_size for p in args.root.rglob("*.png"))
    out(f"wrote {args.root}: {len(CLASSES)} classes, {total / 1024:.0f} KB")
    return result


if __name__ == "__main__":
    main()
