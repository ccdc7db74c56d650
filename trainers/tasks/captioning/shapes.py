"""A tiny, deterministic synthetic captioning dataset: two coloured shapes in a spatial relation.

It exists so the captioning pipeline can be trained and evaluated end to end offline, on CPU, in minutes.
Each caption ("a red circle above a blue square") is fully determined by the image: the object named first
is the one earlier in palette order (colour, then shape), the relation says where it is. Positions, sizes and
colours are jittered so that a model has to look at the pixels rather than memorise a handful of images.

    python -m trainers.tasks.captioning.shapes data/shapes --n-train 1280 --n-val 48 --size 64 --seed 0
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import re
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (230, 200, 30),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
RELATIONS: tuple[str, ...] = ("above", "below", "left of", "right of")

BACKGROUND = (245, 245, 245)
SUPERSAMPLE = 4  # draw large, then downsample: anti-aliased edges without depending on the renderer
COLOR_JITTER = 20  # per channel; far smaller than the distance between palette colours
# Object centres, as fractions of the image side. The first-named object sits in the "near" band of the
# relation axis, the second in the "far" band; on the other axis both stay within CROSS_JITTER of the middle.
# Bands are >= 0.36 apart and the cross offset is at most 0.24, so the relation is never ambiguous; radii are
# at most 0.17 (< 0.36 / 2 and < the 0.2 border distance), so shapes never touch or leave the canvas.
# The shapes are large on purpose: the tiny model sees 32x32 pixels in 8x8 patches, and with radii of
# 0.10-0.14 it learned colours but left relations at chance for as many steps.
NEAR_BAND = (0.2, 0.32)
FAR_BAND = (0.68, 0.8)
CROSS_JITTER = 0.12
RADIUS_RANGE = (0.12, 0.17)


@dataclass(frozen=True)
class ShapesDataset:
    """Where a generated shapes dataset lives; the JSON files map image file name to caption."""

    root: Path
    image_dir: Path
    train_json: Path
    val_json: Path


@dataclass(frozen=True)
class ShapeSpec:
    """One object to draw: centre and radius as fractions of the image side, colour after jitter."""

    color_name: str
    shape: str
    rgb: tuple[int, int, int]
    cx: float
    cy: float
    radius: float

    @property
    def phrase(self) -> str:
        return f"a {self.color_name} {self.shape}"


@dataclass(frozen=True)
class SceneSpec:
    """Everything needed to render one image and write its caption."""

    first: ShapeSpec
    second: ShapeSpec
    relation: str

    @property
    def caption(self) -> str:
        return f"{self.first.phrase} {self.relation} {self.second.phrase}"


def _jitter_rgb(rng: random.Random, rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    r, g, b = (min(255, max(0, c + rng.randint(-COLOR_JITTER, COLOR_JITTER))) for c in rgb)
    return r, g, b


def _object_order(obj: tuple[str, str]) -> tuple[int, int]:
    return list(COLORS).index(obj[0]), SHAPES.index(obj[1])


def _pick_objects(rng: random.Random) -> tuple[tuple[str, str], tuple[str, str]]:
    """Two different (colour, shape) pairs, in canonical order: palette order of colour, then of shape.

    The canonical order makes the caption a function of the image: otherwise "a red circle above a blue
    square" and "a blue square below a red circle" would both describe one image, and a model could not
    know which of the two the reference uses.
    """
    first = (rng.choice(list(COLORS)), rng.choice(SHAPES))
    while True:
        second = (rng.choice(list(COLORS)), rng.choice(SHAPES))
        if second != first:
            return (first, second) if _object_order(first) < _object_order(second) else (second, first)


def _centres(rng: random.Random, relation: str) -> tuple[tuple[float, float], tuple[float, float]]:
    """Centres (x, y) of the first- and second-named object; y grows downwards as in image coordinates."""
    near = rng.uniform(*NEAR_BAND)
    far = rng.uniform(*FAR_BAND)
    cross_a = 0.5 + rng.uniform(-CROSS_JITTER, CROSS_JITTER)
    cross_b = 0.5 + rng.uniform(-CROSS_JITTER, CROSS_JITTER)
    if relation == "above":
        return (cross_a, near), (cross_b, far)
    if relation == "below":
        return (cross_a, far), (cross_b, near)
    if relation == "left of":
        return (near, cross_a), (far, cross_b)
    if relation == "right of":
        return (far, cross_a), (near, cross_b)
    raise ValueError(f"unknown relation {relation!r}; expected one of {RELATIONS}")


def make_scene(rng: random.Random) -> SceneSpec:
    """Draw the random choices for one image; rendering is a pure function of the result."""
    (color_a, shape_a), (color_b, shape_b) = _pick_objects(rng)
    relation = rng.choice(RELATIONS)
    (xa, ya), (xb, yb) = _centres(rng, relation)
    first = ShapeSpec(color_a, shape_a, _jitter_rgb(rng, COLORS[color_a]), xa, ya, rng.uniform(*RADIUS_RANGE))
    second = ShapeSpec(
        color_b, shape_b, _jitter_rgb(rng, COLORS[color_b]), xb, yb, rng.uniform(*RADIUS_RANGE)
    )
    return SceneSpec(first, second, relation)


def _draw_shape(draw: ImageDraw.ImageDraw, spec: ShapeSpec, side: int) -> None:
    cx, cy, r = spec.cx * side, spec.cy * side, spec.radius * side
    if spec.shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=spec.rgb)
    elif spec.shape == "square":
        half = r * 0.9  # a square of the same "radius" looks larger than the circle; even them out
        draw.rectangle((cx - half, cy - half, cx + half, cy + half), fill=spec.rgb)
    elif spec.shape == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + r * 0.8), (cx + r, cy + r * 0.8)], fill=spec.rgb)
    else:
        raise ValueError(f"unknown shape {spec.shape!r}; expected one of {SHAPES}")


def render_scene(scene: SceneSpec, image_size: int) -> Image.Image:
    """Render at SUPERSAMPLE x the size and downsample, so edges are smooth and output is deterministic."""
    big = image_size * SUPERSAMPLE
    image = Image.new("RGB", (big, big), BACKGROUND)
    draw = ImageDraw.Draw(image)
    _draw_shape(draw, scene.first, big)
    _draw_shape(draw, scene.second, big)
    return image.resize((image_size, image_size), Image.Resampling.BOX)


def _scene_rng(seed: int, split: str, index: int) -> random.Random:
    """One generator per image (string seeds hash with SHA-512, stable across runs and platforms)."""
    return random.Random(f"shapes:{seed}:{split}:{index}")


def _split_scenes(split: str, n: int, seed: int) -> dict[str, SceneSpec]:
    return {f"{split}_{i:05d}.png": make_scene(_scene_rng(seed, split, i)) for i in range(n)}


def _captions(scenes: dict[str, SceneSpec]) -> dict[str, str]:
    return {name: scene.caption for name, scene in scenes.items()}


def _json_text(mapping: dict[str, str]) -> str:
    return json.dumps(mapping, indent=1, ensure_ascii=False) + "\n"


def _write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Write via a temporary name then rename, so an interrupted run never leaves a complete-looking file."""
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def _is_complete(dataset: ShapesDataset, expected: dict[Path, str], image_size: int) -> bool:
    """Complete = both JSON files hold exactly the expected text and every image exists at the right size."""
    for json_path, text in expected.items():
        if not json_path.is_file() or json_path.read_text(encoding="utf-8") != text:
            return False
    for text in expected.values():
        for name in json.loads(text):
            image_path = dataset.image_dir / name
            if not image_path.is_file():
                return False
            with Image.open(image_path) as image:
                if image.size != (image_size, image_size):
                    return False
    return True


def generate_shapes_dataset(
    out_dir: Path, n_train: int = 1280, n_val: int = 48, image_size: int = 64, seed: int = 0
) -> ShapesDataset:
    """Write `out_dir/images/*.png`, `out_dir/train.json` and `out_dir/val.json` ({file name: caption}).

    Deterministic: the same arguments give byte-identical files. If the output is already complete for these
    arguments nothing is rewritten; the JSON files are written last so a partial run is detected and redone.
    """
    if n_train < 1 or n_val < 1:
        raise ValueError(f"n_train and n_val must be >= 1, got n_train={n_train}, n_val={n_val}")
    if image_size < 16:
        raise ValueError(f"image_size must be >= 16 pixels so the shapes stay recognisable, got {image_size}")
    out_dir = Path(out_dir)
    dataset = ShapesDataset(
        root=out_dir,
        image_dir=out_dir / "images",
        train_json=out_dir / "train.json",
        val_json=out_dir / "val.json",
    )
    splits = {
        dataset.train_json: _split_scenes("train", n_train, seed),
        dataset.val_json: _split_scenes("val", n_val, seed),
    }
    expected = {path: _json_text(_captions(scenes)) for path, scenes in splits.items()}
    if _is_complete(dataset, expected, image_size):
        return dataset

    dataset.image_dir.mkdir(parents=True, exist_ok=True)
    for scenes in splits.values():
        for name, scene in scenes.items():
            image = render_scene(scene, image_size)
            _write_atomic(
                dataset.image_dir / name, lambda p, im=image: im.save(p, format="PNG", optimize=True)
            )
    for path, text in expected.items():
        _write_atomic(path, lambda p, t=text: p.write_text(t, encoding="utf-8"))
    return dataset


# ------------------------------------------------------------------------------------------------ scoring

_OBJECT_RE = re.compile(rf"\b({'|'.join(COLORS)})\s+({'|'.join(SHAPES)})\b")
_RELATION_RE = re.compile(rf"\b({'|'.join(RELATIONS)})\b")


@dataclass(frozen=True)
class ParsedCaption:
    """The (colour, shape) objects a caption names, in the order named, and the first relation word."""

    objects: tuple[tuple[str, str], ...]
    relation: str | None

    @property
    def is_scene(self) -> bool:
        """Whether it reads like a generated caption: exactly two objects and a relation."""
        return len(self.objects) == 2 and self.relation is not None


def parse_caption(text: str) -> ParsedCaption:
    """Read objects and relation out of a caption; tolerant of extra words, case and punctuation."""
    lowered = " ".join(re.sub(r"[^a-z]+", " ", text.lower()).split())
    relation = _RELATION_RE.search(lowered)
    return ParsedCaption(tuple(_OBJECT_RE.findall(lowered)), relation[1] if relation else None)


@dataclass(frozen=True)
class ShapesScore:
    """How much of each image's ground truth the predicted captions get right (fractions in [0, 1]).

    An object counts when the caption names the right colour and shape at its position (first or second):
    captions name objects in canonical order, so the position is part of what the image determines. With
    4 colours x 3 shapes a uniform guess gets 1 object in 12 right, a uniform relation 1 in 4.
    """

    images: int
    object_accuracy: float
    color_accuracy: float
    shape_accuracy: float
    relation_accuracy: float
    exact_match: float
    unparsed: int  # predictions that name no object at all

    def to_dict(self) -> dict[str, float | int]:
        return dataclasses.asdict(self)


def score_shapes_captions(
    predictions: Mapping[Hashable, str], references: Mapping[Hashable, str | Sequence[str]]
) -> ShapesScore:
    """Compare each prediction with its image's ground truth, read from the (first) reference caption."""
    if not predictions or set(predictions) != set(references):
        raise ValueError("predictions and references must be non-empty and have the same ids")
    objects = colors = shapes = relations = exact = unparsed = 0
    for key, text in predictions.items():
        reference = references[key]
        truth = parse_caption(reference if isinstance(reference, str) else reference[0])
        if not truth.is_scene:
            raise ValueError(f"reference for id {key!r} is not a shapes caption: {reference!r}")
        guess = parse_caption(text)
        unparsed += not guess.objects
        for (color, shape), named in zip(truth.objects, [*guess.objects, None, None], strict=False):
            colors += named is not None and named[0] == color
            shapes += named is not None and named[1] == shape
            objects += named == (color, shape)
        relations += guess.relation == truth.relation
        exact += guess.objects == truth.objects and guess.relation == truth.relation
    n = len(predictions)
    return ShapesScore(
        n, objects / (2 * n), colors / (2 * n), shapes / (2 * n), relations / n, exact / n, unparsed
    )


def is_shapes_caption_set(references: Iterable[str | Sequence[str]]) -> bool:
    """Whether every reference reads as a generated shapes caption (so `score_shapes_captions` applies)."""
    found = False
    for reference in references:
        found = True
        if not parse_caption(reference if isinstance(reference, str) else reference[0]).is_scene:
            return False
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trainers.tasks.captioning.shapes",
        description="Generate the synthetic two-shapes captioning dataset (deterministic, idempotent).",
    )
    parser.add_argument("out_dir", type=Path, help="output directory (images/, train.json, val.json)")
    parser.add_argument("--n-train", type=int, default=1280, help="number of training images (default 1280)")
    parser.add_argument("--n-val", type=int, default=48, help="number of validation images (default 48)")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = parser.parse_args(argv)
    try:
        dataset = generate_shapes_dataset(args.out_dir, args.n_train, args.n_val, args.size, args.seed)
    except ValueError as error:
        parser.error(str(error))
    print(f"shapes dataset ready: {dataset.train_json} ({args.n_train}), {dataset.val_json} ({args.n_val})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
