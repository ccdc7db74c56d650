"""A tiny synthetic fabric-defect set: woven textures with wrinkle / drop / broken marks and LabelImg VOC XML.

It exists so that Florence-2 detection can be trained and evaluated end to end offline, on CPU, in minutes.
Each image (64 or 96 px square) is a woven texture of a random colour with one to three marks on an 8 x 8
grid of cells, so boxes fall on a few bins and a tiny random-init model can learn them in a few hundred steps:

- wrinkle: a long wavy fold, 4-6 cells along and 1 across (horizontal or vertical), darker than the cloth;
- drop: a round stain filling 2 x 2 cells, dark or light;
- broken: a patch of frayed, crossing threads of 2 x 3 cells.

The object's `<description>` (its dense region caption) says the variant: "horizontal wrinkle", "dark drop",
"broken thread". The layout is LabelImg's (`JPEGImages/`, `Annotations/`), per split:

    python -m trainers.tasks.prompted_generation.fabric data/fabric --n-train 300 --n-val 24
"""

from __future__ import annotations

import argparse
import random
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CLASSES: tuple[str, ...] = ("wrinkle", "drop", "broken")
GRID = 8
SIZES = (64, 96)


@dataclass(frozen=True)
class Mark:
    name: str
    description: str
    cells: tuple[int, int, int, int]  # x1, y1, x2, y2 in grid cells (x2, y2 exclusive)

    def box(self, size: int) -> tuple[int, int, int, int]:
        step = size // GRID
        x1, y1, x2, y2 = self.cells
        return x1 * step, y1 * step, x2 * step, y2 * step


def _texture(rng: random.Random, size: int) -> np.ndarray:
    """A plain weave: crossing sinusoidal threads with noise, in a random cloth colour."""
    base = np.array([rng.randrange(110, 220) for _ in range(3)], dtype=np.float32)
    period = rng.choice((3.0, 4.0))
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    weave = 0.5 * np.sin(2 * np.pi * x / period) * np.sin(2 * np.pi * y / period)
    noise = np.random.default_rng(rng.randrange(2**31)).normal(0, 0.25, (size, size)).astype(np.float32)
    shade = 1.0 + 0.12 * weave + 0.05 * noise
    return np.clip(base[None, None, :] * shade[..., None], 0, 255)


def _place(rng: random.Random, w: int, h: int, taken: np.ndarray) -> tuple[int, int, int, int] | None:
    for _ in range(50):
        x, y = rng.randrange(0, GRID - w + 1), rng.randrange(0, GRID - h + 1)
        if not taken[y : y + h, x : x + w].any():
            taken[y : y + h, x : x + w] = True
            return x, y, x + w, y + h
    return None


def _mark(rng: random.Random, name: str, taken: np.ndarray) -> Mark | None:
    if name == "wrinkle":
        length = rng.randrange(4, 7)
        horizontal = rng.random() < 0.5
        cells = _place(rng, length, 1, taken) if horizontal else _place(rng, 1, length, taken)
        description = "horizontal wrinkle" if horizontal else "vertical wrinkle"
    elif name == "drop":
        cells = _place(rng, 2, 2, taken)
        description = "dark drop" if rng.random() < 0.5 else "light drop"
    else:
        cells = _place(rng, 2, 3, taken) if rng.random() < 0.5 else _place(rng, 3, 2, taken)
        description = "broken thread"
    return Mark(name, description, cells) if cells is not None else None


def _draw(image: Image.Image, mark: Mark, rng: random.Random) -> None:
    size = image.width
    x1, y1, x2, y2 = mark.box(size)
    draw = ImageDraw.Draw(image)
    if mark.name == "wrinkle":
        horizontal = x2 - x1 > y2 - y1
        length, across = (x2 - x1, y2 - y1) if horizontal else (y2 - y1, x2 - x1)
        phase = rng.uniform(0, 6.28)
        points = []
        for t in range(length + 1):
            offset = across / 2 + (across / 3) * np.sin(phase + 2 * np.pi * t / max(8, length / 2))
            points.append((x1 + t, y1 + offset) if horizontal else (x1 + offset, y1 + t))
        draw.line(points, fill=(40, 35, 30), width=max(2, across // 3))
    elif mark.name == "drop":
        fill = (30, 25, 20) if mark.description == "dark drop" else (250, 250, 240)
        inset = max(1, (x2 - x1) // 10)
        draw.ellipse((x1 + inset, y1 + inset, x2 - inset - 1, y2 - inset - 1), fill=fill)
    else:
        for _ in range(7):
            a = (rng.uniform(x1, x2 - 1), rng.uniform(y1, y2 - 1))
            b = (rng.uniform(x1, x2 - 1), rng.uniform(y1, y2 - 1))
            draw.line((a, b), fill=(245, 240, 80), width=1)


def render(rng: random.Random, size: int) -> tuple[Image.Image, list[Mark]]:
    """One textured image and its marks (one to three, of random classes, never overlapping)."""
    image = Image.fromarray(_texture(rng, size).astype(np.uint8), "RGB")
    taken = np.zeros((GRID, GRID), dtype=bool)
    marks = [m for m in (_mark(rng, rng.choice(CLASSES), taken) for _ in range(rng.randrange(1, 4))) if m]
    for mark in marks:
        _draw(image, mark, rng)
    return image, marks


def voc_xml(filename: str, size: int, marks: list[Mark]) -> str:
    """The LabelImg XML of one image (1-based pixel corners as LabelImg writes them are not used: 0-based)."""
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "JPEGImages"
    ET.SubElement(root, "filename").text = filename
    dims = ET.SubElement(root, "size")
    for key, value in (("width", size), ("height", size), ("depth", 3)):
        ET.SubElement(dims, key).text = str(value)
    ET.SubElement(root, "segmented").text = "0"
    for mark in marks:
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = mark.name
        ET.SubElement(obj, "description").text = mark.description
        ET.SubElement(obj, "pose").text = "Unspecified"
        ET.SubElement(obj, "truncated").text = "0"
        ET.SubElement(obj, "difficult").text = "0"
        box = ET.SubElement(obj, "bndbox")
        for key, value in zip(("xmin", "ymin", "xmax", "ymax"), mark.box(size), strict=True):
            ET.SubElement(box, key).text = str(value)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


def generate(root: Path, counts: dict[str, int], seed: int = 0) -> Path:
    """Write `<root>/<split>/JPEGImages/*.jpg` and `<root>/<split>/Annotations/*.xml`; deterministic."""
    root = Path(root)
    for split_index, (split, n) in enumerate(counts.items()):
        shutil.rmtree(root / split, ignore_errors=True)
        images, annotations = root / split / "JPEGImages", root / split / "Annotations"
        images.mkdir(parents=True)
        annotations.mkdir(parents=True)
        rng = random.Random(f"{seed}-{split_index}")
        for i in range(n):
            size = SIZES[i % len(SIZES)]
            image, marks = render(rng, size)
            name = f"{split}_{i:03d}.jpg"
            image.save(images / name, quality=85)
            (annotations / f"{split}_{i:03d}.xml").write_text(voc_xml(name, size, marks))
    return root


def main(argv: list[str] | None = None, out: Callable[[str], None] = print) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, nargs="?", default=Path("data/fabric"))
    parser.add_argument("--n-train", type=int, default=300)
    parser.add_argument("--n-val", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    generate(args.root, {"train": args.n_train, "val": args.n_val}, args.seed)
    total = sum(p.stat().st_size for p in args.root.rglob("*") if p.is_file())
    out(f"wrote {args.root}: {args.n_train} train and {args.n_val} val images, {total / 1024:.0f} KB")
    return args.root


if __name__ == "__main__":
    main()
