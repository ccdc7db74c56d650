"""A tiny, deterministic detection set: 1-2 filled shapes per image, COCO boxes, three classes.

It exists so detection can be trained and evaluated end to end offline, on CPU, in about a minute. Each
image (64x64, light background) holds one or two non-overlapping shapes — a circle, a square or a
triangle — each in its class's hue (jittered), at a random size (16-30 px) and position; its COCO box is the
shape's tight bounding box. Written as `<root>/{train,val}.json` (COCO detection format) and
`<root>/images/<split>_<n>.png`, the layout `DetectionData` reads.

    python -m trainers.tasks.detection.shapes data/tiny_boxes --n-train 160 --n-val 32
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageDraw

CLASSES: tuple[str, ...] = ("circle", "square", "triangle")
COLOURS = {"circle": (210, 40, 40), "square": (40, 150, 60), "triangle": (40, 70, 210)}
SIZE_RANGE = (16, 30)  # box side in pixels
SUPERSAMPLE = 4


def _overlaps(box: tuple[int, int, int, int], others: list[tuple[int, int, int, int]], gap: int = 2) -> bool:
    x, y, w, h = box
    return any(
        x < ox + ow + gap and ox < x + w + gap and y < oy + oh + gap and oy < y + h + gap
        for ox, oy, ow, oh in others
    )


def _draw(pen: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], colour) -> None:
    x, y, w, h = (v * SUPERSAMPLE for v in box)
    if shape == "circle":
        pen.ellipse((x, y, x + w - 1, y + h - 1), fill=colour)
    elif shape == "square":
        pen.rectangle((x, y, x + w - 1, y + h - 1), fill=colour)
    else:
        pen.polygon([(x + w / 2, y), (x + w - 1, y + h - 1), (x, y + h - 1)], fill=colour)


def render(
    rng: random.Random, size: int = 64, max_objects: int = 2
) -> tuple[Image.Image, list[tuple[str, tuple[int, int, int, int]]]]:
    """One image and its objects as (class, (x, y, w, h)) in pixels."""
    background = tuple(rng.randrange(215, 256) for _ in range(3))
    image = Image.new("RGB", (size * SUPERSAMPLE, size * SUPERSAMPLE), background)
    pen = ImageDraw.Draw(image)
    objects: list[tuple[str, tuple[int, int, int, int]]] = []
    for _ in range(rng.randint(1, max_objects)):
        shape = rng.choice(CLASSES)
        for _attempt in range(20):
            side = rng.randint(*SIZE_RANGE)
            box = (rng.randint(1, size - side - 1), rng.randint(1, size - side - 1), side, side)
            if not _overlaps(box, [b for _, b in objects]):
                break
        else:
            continue
        colour = tuple(max(0, min(255, c + rng.randint(-25, 25))) for c in COLOURS[shape])
        _draw(pen, shape, box, colour)
        objects.append((shape, box))
    return image.resize((size, size), Image.Resampling.LANCZOS), objects


def generate(root: Path, counts: dict[str, int], size: int = 64, seed: int = 0, max_objects: int = 2) -> Path:
    """Write the JSON files and images; the same arguments always give the same bytes."""
    root = Path(root)
    shutil.rmtree(root / "images", ignore_errors=True)
    (root / "images").mkdir(parents=True)
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(CLASSES)]
    for split_index, (split, count) in enumerate(counts.items()):
        rng = random.Random(f"{seed}-{split_index}")
        images, annotations = [], []
        for n in range(count):
            image, objects = render(rng, size, max_objects)
            name = f"{split}_{n:03d}.png"
            image.save(root / "images" / name, optimize=True)
            images.append({"id": n + 1, "file_name": name, "width": size, "height": size})
            for shape, (x, y, w, h) in objects:
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": n + 1,
                        "category_id": CLASSES.index(shape) + 1,
                        "bbox": [x, y, w, h],
                        "area": w * h,
                        "iscrowd": 0,
                    }
                )
        payload = {"images": images, "annotations": annotations, "categories": categories}
        (root / f"{split}.json").write_text(json.dumps(payload) + "\n")
    return root


def main(argv: list[str] | None = None, out: Callable[[str], None] = print) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, nargs="?", default=Path("data/tiny_boxes"))
    parser.add_argument("--n-train", type=int, default=160)
    parser.add_argument("--n-val", type=int, default=32)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-objects", type=int, default=2, help="shapes per image: 1 to this many")
    args = parser.parse_args(argv)
    root = generate(
        args.root, {"train": args.n_train, "val": args.n_val}, args.size, args.seed, args.max_objects
    )
    total = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    out(f"wrote {root}: {len(CLASSES)} classes, {total / 1024:.0f} KB")
    return root


if __name__ == "__main__":
    main()
