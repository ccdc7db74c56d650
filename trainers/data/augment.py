"""Declared, seeded augmentation for every task, in PIL and numpy (no torchvision, no albumentations).

A recipe declares *what* to do (`Augment(hflip=0.5, rotate_degrees=10, color_jitter=ColorJitter(...))`);
`augment(sample, config, seed=, epoch=, index=)` applies it to one sample: a PIL image plus, optionally,
boxes (xyxy, absolute pixels), keypoints (x, y, visibility) and caption text. Ops that move geometry move
the annotations with the pixels, through the same matrix the image is resampled with, so they cannot drift
apart:

- random resized crop: boxes are clipped to the crop, and boxes left under `min_box_area` (output pixels)
  or under `min_box_visibility` of their area are dropped and counted; keypoints outside get visibility 0;
- horizontal flip: x -> W - x; keypoints also swap their left/right partners (`flip_pairs`), so a flipped
  left wrist is still labelled a left wrist; a caption naming `left`/`right` has them swapped (word
  boundaries, case kept) or, with `caption_sides="no_flip"`, the sample is not flipped at all;
- rotation by a uniform angle in [-rotate_degrees, rotate_degrees] about the centre (canvas kept, corners
  filled with `fill`): a box becomes the enclosing box of its rotated corners, clipped; keypoints leaving
  the image get visibility 0.

Order: crop, flip, rotate, colour. Every random draw comes from a generator seeded by
(seed, epoch, sample index, op), never from the global RNG: a sample's augmentation does not depend on the
rank that loads it, the DataLoader worker, how many samples came before it, or whether the run was resumed,
so 2-rank, resumed and uninterrupted runs see the same pixels. Each op has its own stream, so switching one
op on or off does not change what the others draw.

Training only: the caller wraps the training set and never the validation or test sets (evaluation must
see the data as it is).

How it plugs in: the recipe's data section of every task gets a field `augment: Augment | None = None`
(`data.augment.hflip=0` etc. work as overrides: every field is a plain typed value), validated at recipe
load with `Augment.validate("data.augment")`. The task's `build(recipe, processor)` wraps its training
dataset in `AugmentedDataset(train, recipe.data.augment, seed=recipe.training.seed)`, and a Trainer
callback calls `set_epoch(int(state.epoch))` at `on_epoch_begin` (accelerate's `DataLoaderShard.set_epoch`
does not reach the dataset when the sampler has its own `set_epoch`). `dropped_boxes` in each item lets the
collator count the boxes the crop removed for the run summary.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance

from trainers.data.augment_config import Augment, CaptionSides, ColorJitter, RandomResizedCrop
from trainers.data.epoch import EpochAware
from trainers.errors import RecipeError

__all__ = ["Augment", "AugmentedDataset", "CaptionSides", "ColorJitter", "RandomResizedCrop", "augment"]

# one independent random stream per op (the last SeedSequence word)
_CROP, _FLIP, _ROTATE, _COLOR = 1, 2, 3, 4

# `left`/`right`, alone or as `leftmost`, `rightward(s)`, `left-hand`; not `leftover`, `righteous`
_SIDE_WORD = re.compile(r"\b(left|right)(?=(?:most|wards?|hand)?\b)", re.IGNORECASE)


# ------------------------------------------------------------------------------------------------ sample


@dataclass
class Sample:
    """One sample's image and annotations.

    `boxes`: (N, 4) xyxy in absolute pixels of `image`; `box_labels`: anything indexable with N entries,
    kept in step with `boxes`; `keypoints`: (K, 3) or, per box, (N, K, 3) of (x, y, visibility), in pixels
    (visibility 0 means not labelled / not in the image); `caption`: one caption or a list of them.
    Coordinates are continuous, as COCO boxes: pixel column i spans [i, i + 1), so a flip maps x to W - x
    (a keypoint given as a pixel index i means the pixel's centre, i + 0.5).
    """

    image: Image.Image
    boxes: np.ndarray | None = None
    box_labels: Any = None
    keypoints: np.ndarray | None = None
    caption: str | list[str] | None = None


@dataclass
class Augmented:
    """The augmented sample, how many boxes were dropped, and what was drawn (for logs and tests)."""

    sample: Sample
    dropped_boxes: int = 0
    applied: dict[str, Any] = field(default_factory=dict)


def swap_sides(text: str) -> str:
    """`left` <-> `right` at word boundaries (`leftmost`, `left-hand` too), keeping each word's case."""

    def swap(match: re.Match[str]) -> str:
        word = match.group(0)
        new = "right" if word.lower() == "left" else "left"
        if word.isupper():
            return new.upper()
        return new.capitalize() if word[0].isupper() else new

    return _SIDE_WORD.sub(swap, text)


def names_a_side(caption: str | Sequence[str] | None) -> bool:
    if caption is None:
        return False
    texts = [caption] if isinstance(caption, str) else caption
    return any(_SIDE_WORD.search(t) for t in texts)


def _rng(seed: int, epoch: int, index: int, op: int) -> np.random.Generator:
    if min(seed, epoch, index) < 0:
        raise ValueError(f"augmentation seed, epoch and index must be >= 0, got {(seed, epoch, index)}")
    return np.random.default_rng(np.random.SeedSequence([seed, epoch, index, op]))


# ------------------------------------------------------------------------------------------ annotations


class _Annotations:
    """Boxes, their labels and keypoints of one sample, moved together by point maps."""

    def __init__(self, sample: Sample) -> None:
        self.boxes = (
            None if sample.boxes is None else np.asarray(sample.boxes, dtype=np.float64).reshape(-1, 4)
        )
        self.labels = sample.box_labels
        self.keypoints = None if sample.keypoints is None else np.array(sample.keypoints, dtype=np.float64)
        if self.keypoints is not None and self.keypoints.shape[-1] != 3:
            raise ValueError(
                f"keypoints must be (..., K, 3) of (x, y, visibility), got shape {self.keypoints.shape}"
            )
        if self.labels is not None and self.boxes is not None and len(self.labels) != len(self.boxes):
            raise ValueError(f"{len(self.labels)} box labels for {len(self.boxes)} boxes")
        self.per_box = self.keypoints is not None and self.keypoints.ndim == 3 and self.boxes is not None
        if self.per_box and len(self.keypoints) != len(self.boxes):
            raise ValueError(f"per-box keypoints {self.keypoints.shape} for {len(self.boxes)} boxes")
        self.dropped = 0

    def move(
        self,
        point_map,
        width: int,
        height: int,
        min_area: float = 0.0,
        min_visibility: float = 0.0,
        drop: bool = True,
    ) -> None:
        """Map every point; boxes → enclosing box of their mapped corners, clipped; with `drop`, boxes left
        empty, under `min_area` or under `min_visibility` of their mapped area are removed and counted."""
        if self.boxes is not None and len(self.boxes):
            x0, y0, x1, y1 = self.boxes.T
            xs, ys = point_map(np.stack([x0, x1, x1, x0], 1), np.stack([y0, y0, y1, y1], 1))
            moved = np.stack([xs.min(1), ys.min(1), xs.max(1), ys.max(1)], 1)
            clipped = np.stack(
                [
                    moved[:, 0].clip(0, width),
                    moved[:, 1].clip(0, height),
                    moved[:, 2].clip(0, width),
                    moved[:, 3].clip(0, height),
                ],
                1,
            )
            area = (clipped[:, 2] - clipped[:, 0]).clip(0) * (clipped[:, 3] - clipped[:, 1]).clip(0)
            full = (moved[:, 2] - moved[:, 0]) * (moved[:, 3] - moved[:, 1])
            visible = np.divide(area, full, out=np.zeros_like(area), where=full > 0)
            keep = (area > 0) & (area >= min_area) & (visible >= min_visibility)
            self._keep(clipped, keep if drop else np.ones_like(keep))
        if self.keypoints is not None:
            kp = self.keypoints
            kp[..., 0], kp[..., 1] = point_map(kp[..., 0], kp[..., 1])
            outside = (kp[..., 0] < 0) | (kp[..., 0] >= width) | (kp[..., 1] < 0) | (kp[..., 1] >= height)
            kp[..., 2] = np.where(outside, 0.0, kp[..., 2])

    def _keep(self, boxes: np.ndarray, keep: np.ndarray) -> None:
        self.dropped += int((~keep).sum())
        self.boxes = boxes[keep]
        if self.labels is not None:
            idx = np.flatnonzero(keep)
            self.labels = (
                self.labels[idx] if isinstance(self.labels, np.ndarray) else [self.labels[i] for i in idx]
            )
        if self.per_box:
            self.keypoints = self.keypoints[keep]

    def flip_keypoint_pairs(self, pairs: Sequence[tuple[int, int]]) -> None:
        if self.keypoints is None or not pairs:
            return
        count = self.keypoints.shape[-2]
        if max(max(p) for p in pairs) >= count:
            raise RecipeError(
                f"augment.flip_pairs {list(pairs)} names keypoint indices beyond the {count} keypoints of the data; "
                "list pairs of indices below the keypoint count."
            )
        order = np.arange(count)
        for a, b in pairs:
            order[a], order[b] = b, a
        self.keypoints = self.keypoints[..., order, :]

    def to_sample(self, image: Image.Image, caption: str | list[str] | None) -> Sample:
        return Sample(
            image=image, boxes=self.boxes, box_labels=self.labels, keypoints=self.keypoints, caption=caption
        )


# -------------------------------------------------------------------------------------------------- ops


def _crop_params(
    rng: np.random.Generator, width: int, height: int, crop: RandomResizedCrop
) -> tuple[int, ...]:
    """(left, top, w, h), torchvision's RandomResizedCrop.get_params with numpy draws."""
    area = width * height
    log_ratio = (math.log(crop.ratio[0]), math.log(crop.ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(crop.scale[0], crop.scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1)), w, h
    in_ratio = width / height
    if in_ratio < crop.ratio[0]:
        w, h = width, int(round(width / crop.ratio[0]))
    elif in_ratio > crop.ratio[1]:
        w, h = int(round(height * crop.ratio[1])), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def _jitter(image: Image.Image, jitter: ColorJitter, rng: np.random.Generator) -> tuple[Image.Image, dict]:
    drawn: dict[str, float] = {}
    for name, enhancer in (
        ("brightness", ImageEnhance.Brightness),
        ("contrast", ImageEnhance.Contrast),
        ("saturation", ImageEnhance.Color),
    ):
        amount = getattr(jitter, name)
        factor = rng.uniform(max(0.0, 1.0 - amount), 1.0 + amount)  # drawn even when skipped: stable stream
        if amount and (name != "saturation" or image.mode == "RGB"):
            image = enhancer(image).enhance(factor)
            drawn[name] = float(factor)
    shift = rng.uniform(-jitter.hue, jitter.hue)
    if jitter.hue and image.mode == "RGB":
        hsv = np.array(image.convert("HSV"))
        hsv[..., 0] = ((hsv[..., 0].astype(np.int16) + int(round(shift * 255))) % 256).astype(np.uint8)
        image = Image.fromarray(hsv, "HSV").convert("RGB")
        drawn["hue"] = float(shift)
    return image, drawn


def augment(sample: Sample, config: Augment, *, seed: int, epoch: int, index: int) -> Augmented:
    """Apply `config` to one sample; the same (seed, epoch, index) always gives the same result.

    `index` is the sample's index in the whole training set (not in a rank's shard), `epoch` the 0-based
    epoch. The input sample is not modified.
    """
    image = sample.image
    caption = sample.caption
    notes = _Annotations(sample)
    applied: dict[str, Any] = {}

    crop = config.random_resized_crop
    if crop is not None:
        left, top, w, h = _crop_params(_rng(seed, epoch, index, _CROP), image.width, image.height, crop)
        out_w, out_h = crop.size or image.size
        image = image.resize((out_w, out_h), Image.Resampling.BILINEAR, box=(left, top, left + w, top + h))
        sx, sy = out_w / w, out_h / h
        notes.move(
            lambda x, y: ((x - left) * sx, (y - top) * sy),
            out_w,
            out_h,
            config.min_box_area,
            config.min_box_visibility,
        )
        applied["crop"] = (left, top, w, h)

    if config.hflip and _rng(seed, epoch, index, _FLIP).random() < config.hflip:
        if config.caption_sides == "no_flip" and names_a_side(caption):
            applied["hflip"] = "skipped: the caption names a side"
        else:
            width = image.width
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            notes.move(lambda x, y: (width - x, y), image.width, image.height, drop=False)
            notes.flip_keypoint_pairs(config.flip_pairs)
            if caption is not None:
                caption = (
                    swap_sides(caption) if isinstance(caption, str) else [swap_sides(c) for c in caption]
                )
            applied["hflip"] = True

    if config.rotate_degrees:
        angle = float(
            _rng(seed, epoch, index, _ROTATE).uniform(-config.rotate_degrees, config.rotate_degrees)
        )
        image, point_map = _rotate(image, angle, config.fill)
        notes.move(point_map, image.width, image.height, config.min_box_area, config.min_box_visibility)
        applied["rotate"] = angle

    if config.color_jitter is not None:
        image, applied["color"] = _jitter(image, config.color_jitter, _rng(seed, epoch, index, _COLOR))

    return Augmented(notes.to_sample(image, caption), notes.dropped, applied)


def _rotate(image: Image.Image, degrees: float, fill: int):
    """Rotate counter-clockwise about the centre; the point map uses the matrix the pixels are resampled with."""
    theta = math.radians(degrees)
    cos, sin = math.cos(theta), math.sin(theta)
    cx, cy = image.width / 2, image.height / 2
    # PIL's AFFINE data maps output (x, y) to input: x_in = a x + b y + c, y_in = d x + e y + f (pixel centres)
    inverse = (cos, -sin, cx - cos * cx + sin * cy, sin, cos, cy - sin * cx - cos * cy)
    fillcolor = fill if len(image.getbands()) == 1 else (fill,) * len(image.getbands())
    rotated = image.transform(
        image.size, Image.Transform.AFFINE, inverse, Image.Resampling.BILINEAR, fillcolor=fillcolor
    )

    def forward(x, y):  # the inverse of `inverse`: p' = c + R (p - c), R = [[cos, sin], [-sin, cos]]
        dx, dy = x - cx, y - cy
        return cx + cos * dx + sin * dy, cy - sin * dx + cos * dy

    return rotated, forward


# ---------------------------------------------------------------------------------------------- dataset


class AugmentedDataset(EpochAware):
    """A training dataset whose dict items (`image`, optional `boxes`, `box_labels`, `keypoints`, `caption`)
    are augmented by (seed, epoch, index); `set_epoch` must be called at each epoch start.

    Items gain `dropped_boxes` (how many boxes the crop or rotation removed) when they carry boxes. A plain
    map-style dataset (`__len__`, `__getitem__`): torch's DataLoader needs nothing more, and this module stays
    free of torch, so recipes can import `Augment` and still load in a fraction of a second.
    """

    def __init__(self, dataset: Any, config: Augment, seed: int) -> None:
        self.dataset, self.config, self.seed, self.epoch = dataset, config, seed, 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = dict(self.dataset[index])
        sample = Sample(
            image=item["image"],
            boxes=item.get("boxes"),
            box_labels=item.get("box_labels"),
            keypoints=item.get("keypoints"),
            caption=item.get("caption"),
        )
        out = augment(sample, self.config, seed=self.seed, epoch=self.epoch, index=index)
        item["image"] = out.sample.image
        for key in ("boxes", "box_labels", "keypoints", "caption"):
            if item.get(key) is not None:
                item[key] = getattr(out.sample, key)
        if item.get("boxes") is not None:
            item["dropped_boxes"] = out.dropped_boxes
        return item


__all__ = [
    "Augment",
    "AugmentedDataset",
    "Augmented",
    "ColorJitter",
    "RandomResizedCrop",
    "Sample",
    "augment",
    "names_a_side",
    "swap_sides",
]
