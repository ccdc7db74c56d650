"""What a recipe declares about training augmentation (`Augment`, `ColorJitter`, `RandomResizedCrop`).

Torch- and PIL-free dataclasses on the config floor, so every task's data config can hold an `Augment`
without importing the code that applies it (`trainers.data.augment`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from trainers.errors import RecipeError

CaptionSides = Literal["swap", "no_flip"]


@dataclass
class ColorJitter:
    """Photometric jitter, factors drawn uniformly as in torchvision's ColorJitter (fixed order here).

    brightness / contrast / saturation `b`: factor in [max(0, 1 - b), 1 + b] (PIL ImageEnhance);
    hue `h` in [0, 0.5]: the hue circle is rotated by a fraction in [-h, h]. Saturation and hue apply to
    RGB images only.
    """

    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0


@dataclass
class RandomResizedCrop:
    """Crop a random region (area fraction in `scale`, aspect ratio in `ratio`) and resize it to `size`.

    torchvision's sampling (10 tries, then a centre crop). `size` is (width, height); None keeps the
    input's size. Boxes and keypoints follow the crop and the resize.
    """

    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    size: tuple[int, int] | None = None


@dataclass
class Augment:
    """What to apply to each training sample; all off by default.

    `hflip` is a probability; `rotate_degrees` the largest absolute angle; `flip_pairs` the keypoint index
    pairs that swap under a horizontal flip (e.g. COCO's (5, 6) for the shoulders); `caption_sides` what a
    flip does to a caption naming a side ("swap" left/right, or "no_flip": leave that sample unflipped);
    `min_box_area` (output pixels²) and `min_box_visibility` (fraction of the box kept) decide which boxes a
    crop or a rotation drops; `fill` is the grey level of the corners a rotation uncovers.
    """

    hflip: float = 0.0
    rotate_degrees: float = 0.0
    color_jitter: ColorJitter | None = None
    random_resized_crop: RandomResizedCrop | None = None
    caption_sides: CaptionSides = "swap"
    flip_pairs: tuple[tuple[int, int], ...] = ()
    min_box_area: float = 1.0
    min_box_visibility: float = 0.0
    fill: int = 0

    @property
    def active(self) -> bool:
        return bool(self.hflip or self.rotate_degrees or self.color_jitter or self.random_resized_crop)

    def validate(self, key: str = "augment") -> None:
        """Raise RecipeError naming `key.field` for a value that cannot mean anything."""
        if not 0.0 <= self.hflip <= 1.0:
            raise RecipeError(f"{key}.hflip is a probability and must be in [0, 1], got {self.hflip}.")
        if not 0.0 <= self.rotate_degrees <= 180.0:
            raise RecipeError(
                f"{key}.rotate_degrees must be in [0, 180] (the angle is drawn in [-d, d]), got {self.rotate_degrees}."
            )
        if self.caption_sides not in ("swap", "no_flip"):
            raise RecipeError(f"{key}.caption_sides must be 'swap' or 'no_flip', got {self.caption_sides!r}.")
        if self.min_box_area < 0 or not 0.0 <= self.min_box_visibility <= 1.0:
            raise RecipeError(
                f"{key}.min_box_area must be >= 0 and {key}.min_box_visibility in [0, 1]; got "
                f"{self.min_box_area} and {self.min_box_visibility}."
            )
        if not 0 <= self.fill <= 255:
            raise RecipeError(f"{key}.fill is a grey level in [0, 255], got {self.fill}.")
        for pair in self.flip_pairs:
            if len(pair) != 2 or pair[0] == pair[1] or min(pair) < 0:
                raise RecipeError(
                    f"{key}.flip_pairs must hold pairs of two distinct keypoint indices >= 0, e.g. ((1, 2), (3, 4)); "
                    f"got {pair!r}."
                )
        flat = [i for pair in self.flip_pairs for i in pair]
        if len(flat) != len(set(flat)):
            raise RecipeError(f"{key}.flip_pairs names a keypoint in two pairs: {list(self.flip_pairs)}.")
        jitter = self.color_jitter
        if jitter is not None:
            for name in ("brightness", "contrast", "saturation"):
                if getattr(jitter, name) < 0:
                    raise RecipeError(f"{key}.color_jitter.{name} must be >= 0, got {getattr(jitter, name)}.")
            if not 0.0 <= jitter.hue <= 0.5:
                raise RecipeError(f"{key}.color_jitter.hue must be in [0, 0.5], got {jitter.hue}.")
        crop = self.random_resized_crop
        if crop is not None:
            low, high = crop.scale
            if not 0.0 < low <= high <= 1.0:
                raise RecipeError(
                    f"{key}.random_resized_crop.scale must satisfy 0 < min <= max <= 1, got {crop.scale}."
                )
            if not 0.0 < crop.ratio[0] <= crop.ratio[1]:
                raise RecipeError(
                    f"{key}.random_resized_crop.ratio must satisfy 0 < min <= max, got {crop.ratio}."
                )
            if crop.size is not None and (len(crop.size) != 2 or min(crop.size) < 1):
                raise RecipeError(f"{key}.random_resized_crop.size is (width, height) >= 1, got {crop.size}.")
