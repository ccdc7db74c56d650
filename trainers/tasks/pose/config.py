"""Recipe dataclasses of the pose task (no torch import: recipes load fast).

A skeleton is named, not numbered: keypoint names in heatmap order, the left/right pairs a horizontal flip
swaps, the OKS sigma of each keypoint (pycocotools' per-keypoint falloff) and the links drawn between
keypoints. COCO's 17-keypoint person skeleton is built in; any other skeleton is declared in the recipe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from trainers.data.source_config import DatasetSource
from trainers.data.split_config import AugmentableSplitData, DataPath
from trainers.errors import RecipeError

# pycocotools' per-keypoint OKS falloff for COCO's 17 person keypoints
COCO_SIGMAS = (
    0.026,
    0.025,
    0.025,
    0.035,
    0.035,
    0.079,
    0.079,
    0.072,
    0.072,
    0.062,
    0.062,
    0.107,
    0.107,
    0.087,
    0.087,
    0.089,
    0.089,
)

COCO_KEYPOINTS = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)
PCK_THRESHOLD = 0.2
BEST_METRICS = ("pck", "oks_ap")


@dataclass
class Skeleton:
    """Keypoint names (the model's heatmap channels, in order), the name pairs a flip swaps, one OKS sigma per
    keypoint, and the (name, name) links drawn between keypoints (drawing only)."""

    keypoints: tuple[str, ...]
    flip_pairs: tuple[tuple[str, str], ...] = ()
    sigmas: tuple[float, ...] = ()
    links: tuple[tuple[str, str], ...] = ()

    def flip_indices(self) -> tuple[tuple[int, int], ...]:
        index = {name: i for i, name in enumerate(self.keypoints)}
        return tuple((index[a], index[b]) for a, b in self.flip_pairs)

    def link_indices(self) -> tuple[tuple[int, int], ...]:
        index = {name: i for i, name in enumerate(self.keypoints)}
        return tuple((index[a], index[b]) for a, b in self.links)

    def validate(self, key: str = "data.skeleton") -> None:
        """Raise RecipeError for names that repeat or are unknown, pairs that are not mirror images of each
        other (`left_x` with `right_x`), or a sigma count that is not the keypoint count."""
        names = list(self.keypoints)
        if not names or len(set(names)) != len(names):
            raise RecipeError(f"{key}.keypoints must be distinct names, got {names}.")
        known = set(names)
        for where, pairs in (("flip_pairs", self.flip_pairs), ("links", self.links)):
            for pair in pairs:
                if len(pair) != 2 or pair[0] == pair[1] or not set(pair) <= known:
                    raise RecipeError(
                        f"{key}.{where}: {pair!r} must be two distinct names among {key}.keypoints ({', '.join(names)})."
                    )
        flat = [name for pair in self.flip_pairs for name in pair]
        if len(flat) != len(set(flat)):
            raise RecipeError(f"{key}.flip_pairs names a keypoint in two pairs: {list(self.flip_pairs)}.")
        for a, b in self.flip_pairs:
            mirrored = _mirror(a)
            if (mirrored != a or _mirror(b) != b) and mirrored != b:
                raise RecipeError(
                    f"{key}.flip_pairs: {a!r} is paired with {b!r}, but a flip turns {a!r} into {mirrored!r}. Pair "
                    "each left keypoint with its right twin (e.g. ('left_wrist', 'right_wrist'))."
                )
        unpaired = [n for n in names if _mirror(n) != n and _mirror(n) in known and n not in flat]
        if unpaired:
            raise RecipeError(
                f"{key}.flip_pairs leaves {unpaired} unpaired although their mirror names are keypoints: a flipped "
                "image would keep them on the wrong side. Add the pairs."
            )
        if len(self.sigmas) != len(names) or any(s <= 0 for s in self.sigmas):
            raise RecipeError(
                f"{key}.sigmas must hold one positive OKS sigma per keypoint ({len(names)}), got {len(self.sigmas)}: "
                f"{list(self.sigmas)}."
            )


def _mirror(name: str) -> str:
    """`left_x` <-> `right_x`: the name a horizontal flip gives a keypoint (itself if it names no side)."""
    for a, b in (("left", "right"), ("right", "left"), ("Left", "Right"), ("Right", "Left")):
        if a in name:
            return name.replace(a, b)
    return name


COCO_SKELETON = Skeleton(
    keypoints=COCO_KEYPOINTS,
    flip_pairs=tuple(
        (f"left_{p}", f"right_{p}")
        for p in ("eye", "ear", "shoulder", "elbow", "wrist", "hip", "knee", "ankle")
    ),
    sigmas=COCO_SIGMAS,
    links=(
        ("left_ankle", "left_knee"),
        ("left_knee", "left_hip"),
        ("right_ankle", "right_knee"),
        ("right_knee", "right_hip"),
        ("left_hip", "right_hip"),
        ("left_shoulder", "left_hip"),
        ("right_shoulder", "right_hip"),
        ("left_shoulder", "right_shoulder"),
        ("left_shoulder", "left_elbow"),
        ("right_shoulder", "right_elbow"),
        ("left_elbow", "left_wrist"),
        ("right_elbow", "right_wrist"),
        ("left_eye", "right_eye"),
        ("nose", "left_eye"),
        ("nose", "right_eye"),
        ("left_eye", "left_ear"),
        ("right_eye", "right_ear"),
        ("left_ear", "left_shoulder"),
        ("right_ear", "right_shoulder"),
    ),
)


@dataclass
class PoseEval:
    """Evaluation settings: batch size (default: the training eval batch), how many val instances the
    per-evaluation PNG of true vs predicted skeletons shows, and which metric the best checkpoint keeps
    ("pck": PCK@0.2 normalised by the box's longer side, or "oks_ap": COCO keypoint AP over OKS .50:.95)."""

    batch_size: int | None = None
    plot_images: int = 6
    best_metric: Literal["pck", "oks_ap"] = "pck"


@dataclass
class PoseData(AugmentableSplitData):
    """Top-down keypoint data in COCO keypoints format: per split a JSON (`images`, `annotations` with a
    `bbox` [x, y, w, h] and `keypoints` [x1, y1, v1, ...] in pixels, `categories` with the keypoint names),
    and the folder its `file_name`s are relative to (`images`, default: the JSON's folder).

    Each annotation is one instance: its box, widened to the model input's aspect ratio and grown by 1.25
    (ViTPose's padding, the one the image processor decodes with), is cut out at the model's input size. `skeleton` names the keypoints, flip pairs
    and OKS sigmas; None reads the train JSON's keypoint names and needs them to be COCO's 17. `augment`
    (training only) applies to the crop: `hflip` mirrors it about the box centre and swaps the skeleton's
    flip pairs, `rotate_degrees` rotates it about the box centre, `random_resized_crop` zooms in (its `size`
    and `ratio` are set to the crop's), `color_jitter`; keypoints follow the pixels (leaving the crop: weight
    0). `on_bad_sample` ("fail" | "skip"): what an unknown category, a bad box, a keypoint outside its image or
    padded box, a wrong keypoint count or a missing image does. Annotations without labelled keypoints (and
    crowd ones) carry nothing to learn and are left out and counted.

    Any split may instead be a `DatasetSource`, one row per image: `columns.boxes` (e.g. "objects.bbox", in
    `box_format` "xywh" or "xyxy", pixels) and `columns.keypoints` (e.g. "objects.keypoints": per instance
    [x1, y1, v1, ...] or [[x, y, v], ...] in `skeleton` order). The skeleton is then `skeleton`, or COCO's.
    """

    task: ClassVar[str] = "pose"
    eval_config: ClassVar[type] = PoseEval
    data_paths: ClassVar[tuple[DataPath, ...]] = (
        DataPath("train", "COCO keypoints JSON"),
        DataPath("val", "COCO keypoints JSON"),
        DataPath("test", "COCO keypoints JSON"),
        DataPath("images", "image directory", "dir"),
    )
    describing_fields: ClassVar[tuple[str, ...]] = ("skeleton",)
    missing_hint: ClassVar[str] = (
        "Each split is a COCO keypoints JSON (images, annotations with bbox [x, y, w, h] and keypoints "
        "[x, y, v, ...] in pixels, categories naming the keypoints) whose file_names are relative to "
        "data.images; point data.train=, data.val= at yours. `--demo` trains on the shipped data/stick_figures."
    )

    train: str | DatasetSource
    val: str | DatasetSource
    test: str | DatasetSource | None = None
    skeleton: Skeleton | None = None

    def validate(self) -> None:
        if self.skeleton is not None:
            self.skeleton.validate("data.skeleton")
        super().validate()
        if self.augment is not None and self.augment.flip_pairs:
            raise RecipeError(
                "data.augment.flip_pairs: the pose task takes its flip pairs from data.skeleton.flip_pairs (by "
                "keypoint name); leave data.augment.flip_pairs empty."
            )
