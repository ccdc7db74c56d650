"""A tiny, deterministic keypoint set: stick figures in random poses, COCO keypoints JSON, 11 keypoints.

It exists so the pose task can be trained and evaluated end to end offline, on CPU, in seconds. Each image
(80x80, light background) holds one figure, or two smaller ones, facing the viewer (its left side is the
image's right), drawn as lines with a round head: random size (30-60 px tall), position, lean (±35°), arm
angles (from hanging down to raised) and elbow/knee bends, so the mean pose misses the hands and feet.
Keypoints are the joints the lines are drawn through (pixel centres at integers, COCO's convention), all
visible; the box encloses the drawing. Written as `<root>/{train,val}.json` and `<root>/images/<split>_<n>.png`.

    python -m trainers.tasks.pose.stick_figures data/stick_figures --n-train 512 --n-val 24
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageDraw

from trainers.tasks.pose.config import Skeleton

KEYPOINTS = (
    "head",
    "neck",
    "left_elbow",
    "right_elbow",
    "left_hand",
    "right_hand",
    "hip",
    "left_knee",
    "right_knee",
    "left_foot",
    "right_foot",
)
LINKS = (
    ("head", "neck"),
    ("neck", "left_elbow"),
    ("left_elbow", "left_hand"),
    ("neck", "right_elbow"),
    ("right_elbow", "right_hand"),
    ("neck", "hip"),
    ("hip", "left_knee"),
    ("left_knee", "left_foot"),
    ("hip", "right_knee"),
    ("right_knee", "right_foot"),
)
STICK_FIGURE = Skeleton(
    keypoints=KEYPOINTS,
    flip_pairs=(
        ("left_elbow", "right_elbow"),
        ("left_hand", "right_hand"),
        ("left_knee", "right_knee"),
        ("left_foot", "right_foot"),
    ),
    # OKS falloff per keypoint, in COCO's range: tighter for the trunk, looser for the limb ends
    sigmas=(0.05, 0.05, 0.07, 0.07, 0.09, 0.09, 0.05, 0.07, 0.07, 0.09, 0.09),
    links=LINKS,
)
SUPERSAMPLE = 4


def _limb(start: tuple[float, float], angle: float, length: float) -> tuple[float, float]:
    """The end of a limb `length` long leaving `start` at `angle` (radians, 0 = straight down, + = to +x)."""
    return start[0] + length * math.sin(angle), start[1] + length * math.cos(angle)


def pose(rng: random.Random, height: float) -> dict[str, tuple[float, float]]:
    """Joint positions of one figure `height` px tall, neck at the origin, before the lean."""
    joints = {"neck": (0.0, 0.0), "head": (0.0, -0.17 * height), "hip": (0.0, 0.36 * height)}
    for side, sign in (("left", 1.0), ("right", -1.0)):
        upper = math.radians(rng.uniform(15, 165))
        fore = upper + math.radians(rng.uniform(-50, 80))
        joints[f"{side}_elbow"] = _limb(joints["neck"], sign * upper, 0.2 * height)
        joints[f"{side}_hand"] = _limb(joints[f"{side}_elbow"], sign * fore, 0.18 * height)
        thigh = math.radians(rng.uniform(5, 45))
        shin = thigh + math.radians(rng.uniform(-25, 35))
        joints[f"{side}_knee"] = _limb(joints["hip"], sign * thigh, 0.26 * height)
        joints[f"{side}_foot"] = _limb(joints[f"{side}_knee"], sign * shin, 0.24 * height)
    lean = math.radians(rng.uniform(-35, 35))
    cos, sin = math.cos(lean), math.sin(lean)
    hx, hy = joints["hip"]
    return {
        k: (hx + cos * (x - hx) - sin * (y - hy), hy + sin * (x - hx) + cos * (y - hy))
        for k, (x, y) in joints.items()
    }


def _extent(
    joints: dict[str, tuple[float, float]], head: float, pad: float
) -> tuple[float, float, float, float]:
    xs = [x for x, _ in joints.values()] + [joints["head"][0] - head, joints["head"][0] + head]
    ys = [y for _, y in joints.values()] + [joints["head"][1] - head, joints["head"][1] + head]
    return min(xs) - pad, min(ys) - pad, max(xs) + pad, max(ys) + pad


def render(rng: random.Random, size: int = 80) -> tuple[Image.Image, list[tuple[list[float], list[float]]]]:
    """One image and its figures as (box [x, y, w, h], keypoints [x, y, v, ...]) in pixels."""
    background = tuple(rng.randrange(200, 256) for _ in range(3))
    image = Image.new("RGB", (size * SUPERSAMPLE, size * SUPERSAMPLE), background)
    pen = ImageDraw.Draw(image)
    two = rng.random() < 0.25
    taken: list[tuple[float, float, float, float]] = []
    figures = []
    for _ in range(2 if two else 1):
        height = rng.uniform(30, 40) if two else rng.uniform(40, 60)
        joints, head, line = pose(rng, height), 0.09 * height, max(1.5, 0.05 * height)
        x0, y0, x1, y1 = _extent(joints, head, line / 2 + 1)
        for _attempt in range(30):
            dx, dy = rng.uniform(1 - x0, size - 2 - x1), rng.uniform(1 - y0, size - 2 - y1)
            box = (x0 + dx, y0 + dy, x1 + dx, y1 + dy)
            if not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in taken):
                break
        else:
            continue
        taken.append(box)
        placed = {k: (x + dx, y + dy) for k, (x, y) in joints.items()}
        ink = tuple(rng.randrange(0, 90) for _ in range(3))

        # pixel centres at integers -> the supersampled canvas's continuous coordinates
        canvas = {k: ((x + 0.5) * SUPERSAMPLE, (y + 0.5) * SUPERSAMPLE) for k, (x, y) in placed.items()}
        for a, b in LINKS[1:]:
            pen.line([canvas[a], canvas[b]], fill=ink, width=round(line * SUPERSAMPLE))
        hx, hy = canvas["head"]
        r = head * SUPERSAMPLE
        pen.ellipse((hx - r, hy - r, hx + r, hy + r), outline=ink, width=round(line * SUPERSAMPLE))
        keypoints = [
            v for name in KEYPOINTS for v in (round(placed[name][0], 2), round(placed[name][1], 2), 2)
        ]
        figures.append(
            (
                [round(box[0], 2), round(box[1], 2), round(box[2] - box[0], 2), round(box[3] - box[1], 2)],
                keypoints,
            )
        )
    return image.resize((size, size), Image.Resampling.LANCZOS), figures


def generate(root: Path, counts: dict[str, int], size: int = 80, seed: int = 0) -> Path:
    """Write the JSON files and images; the same arguments always give the same bytes."""
    root = Path(root)
    shutil.rmtree(root / "images", ignore_errors=True)
    (root / "images").mkdir(parents=True)
    index = {name: i + 1 for i, name in enumerate(KEYPOINTS)}
    category = {
        "id": 1,
        "name": "stick_figure",
        "keypoints": list(KEYPOINTS),
        "skeleton": [[index[a], index[b]] for a, b in LINKS],
    }
    for split_index, (split, count) in enumerate(counts.items()):
        rng = random.Random(f"{seed}-{split_index}")
        images, annotations = [], []
        for n in range(count):
            image, figures = render(rng, size)
            name = f"{split}_{n:03d}.png"
            image.quantize(colors=32).save(root / "images" / name, optimize=True)  # 32 colours: a small PNG
            images.append({"id": n + 1, "file_name": name, "width": size, "height": size})
            for box, keypoints in figures:
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": n + 1,
                        "category_id": 1,
                        "bbox": box,
                        "area": round(box[2] * box[3], 2),
                        "iscrowd": 0,
                        "keypoints": keypoints,
                        "num_keypoints": len(KEYPOINTS),
                    }
                )
        payload = {"images": images, "annotations": annotations, "categories": [category]}
        (root / f"{split}.json").write_text(json.dumps(payload) + "\n")
    return root


def main(argv: list[str] | None = None, out: Callable[[str], None] = print) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, nargs="?", default=Path("data/stick_figures"))
    parser.add_argument("--n-train", type=int, default=512)
    parser.add_argument("--n-val", type=int, default=24)
    parser.add_argument("--size", type=int, default=80)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    root = generate(args.root, {"train": args.n_train, "val": args.n_val}, args.size, args.seed)
    total = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    out(f"wrote {root}: {len(KEYPOINTS)} keypoints, {total / 1024:.0f} KB")
    return root


if __name__ == "__main__":
    main()
