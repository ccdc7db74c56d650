"""COCO keypoints data for top-down pose: reading and checking the JSON, the instance crops, the collators.

One item per annotation (instance), not per image. The crop is the image processor's own geometry
(`transformers.models.vitpose.image_processing_pil_vitpose`: `box_to_center_and_scale` with 1.25 padding and
the UDP warp matrix `get_warp_matrix`), applied with its `scipy_warp_affine`; the keypoints go through the
same matrix, so the crop's pixels and its keypoints cannot drift apart, and the processor's
`post_process_pose_estimation` (which inverts exactly this geometry) decodes the model's heatmaps back into
image pixels.

Coordinates: annotations and predictions are in image pixels with pixel centres at integers (COCO's
keypoint convention, the processor's); the shared augmentation (`trainers.data.augment`) works in continuous
coordinates (pixel i spans [i, i + 1)), so crop keypoints get +0.5 on the way in and -0.5 on the way out.

Everything that can be checked without decoding pixels is checked at construction (categories, keypoint
count, boxes, keypoints against their image and padded box, files present): bad data fails in the first
second of a run with one paragraph naming the file and the annotation id, or, under `on_bad_sample="skip"`,
drops the instance and counts it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from trainers.data import coco
from trainers.data.augment import Augment, AugmentedDataset
from trainers.data.images import ImageRef, open_rgb
from trainers.data.source_config import DatasetSource
from trainers.data_policy import BadSamples, DataError, ensure_not_empty
from trainers.errors import RecipeError
from trainers.tasks.pose.config import COCO_KEYPOINTS, COCO_SKELETON, Skeleton

PADDING = 1.25  # ViTPose's box padding; the processor's post-processing decodes with it
TOLERANCE = 1.0  # pixels a box or keypoint may overhang (rounding in exported annotations)
_COCO_HINT = (
    'a COCO keypoints JSON holds "images" [{"id", "file_name", "width", "height"}], "annotations" [{"id", '
    '"image_id", "category_id", "bbox": [x, y, w, h], "keypoints": [x1, y1, v1, ...]}] and "categories" '
    '[{"id", "name", "keypoints": [names]}]'
)


@dataclass
class PoseRecord:
    """One annotated instance: box (x, y, w, h) and keypoints (K, 3) of (x, y, visibility), image pixels."""

    annotation_id: int
    image_id: int
    path: ImageRef  # a file, or a `datasets` row (`trainers.data.images.RowImage`)
    width: int
    height: int
    box: tuple[float, float, float, float]
    keypoints: np.ndarray


@dataclass
class PoseBadSamples(BadSamples):
    """`BadSamples` plus the annotations left out for carrying no labelled keypoint (or being crowds)."""

    without_keypoints: int = 0

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "annotations_without_keypoints": self.without_keypoints}


# ------------------------------------------------------------------------------------------- reading


def load_coco(path: Path, key: str) -> dict[str, Any]:
    return coco.load_coco(path, key, "COCO keypoints JSON", _COCO_HINT)


def keypoint_categories(path: Path, key: str) -> dict[int, tuple[str, ...]]:
    """{category id: keypoint names} of the categories that declare keypoints."""
    out: dict[int, tuple[str, ...]] = {}
    for entry in load_coco(path, key)["categories"]:
        if (
            isinstance(entry, dict)
            and isinstance(entry.get("id"), int)
            and isinstance(entry.get("keypoints"), list)
        ):
            out[int(entry["id"])] = tuple(str(n) for n in entry["keypoints"])
    if not out:
        raise DataError(
            f'{path}: no category of {key} lists its "keypoints" names. {_COCO_HINT[0].upper()}'
            f"{_COCO_HINT[1:]}."
        )
    return out


def resolve_skeleton(declared: Skeleton | None, train: Path, key: str = "data.train") -> Skeleton:
    """The recipe's skeleton, checked against the train JSON's keypoint names; COCO's for COCO's 17 names."""
    categories = keypoint_categories(train, key)
    names = {n for n in categories.values()}
    if len(names) != 1:
        raise DataError(
            f"{train}: the keypoint categories of {key} list different keypoints ({sorted(names)}); "
            "one skeleton per run: split the data by skeleton."
        )
    (json_names,) = names
    if declared is None:
        if json_names != COCO_KEYPOINTS:
            raise RecipeError(
                f"{train}: the keypoints {list(json_names)} are not COCO's 17 person keypoints, so the run needs "
                "their flip pairs and OKS sigmas: declare data.skeleton=Skeleton(keypoints=..., flip_pairs=..., "
                "sigmas=...) in the recipe."
            )
        return COCO_SKELETON
    declared.validate("data.skeleton")
    if tuple(declared.keypoints) != json_names:
        raise DataError(
            f"{train}: the categories of {key} name the keypoints {list(json_names)}, but data.skeleton.keypoints "
            f"is {list(declared.keypoints)}. They must be the same names in the same order (the order of "
            "each annotation's keypoint triples)."
        )
    return declared


def padded_box(box: Sequence[float], padding: float = PADDING) -> tuple[float, float, float, float]:
    """x0, y0, x1, y1 of the box grown by `padding` about its centre."""
    x, y, w, h = box
    cx, cy = x + w / 2, y + h / 2
    return cx - w * padding / 2, cy - h * padding / 2, cx + w * padding / 2, cy + h * padding / 2


def read_split(
    path: Path, key: str, root: Path, skeleton: Skeleton, categories: Sequence[int], bad: PoseBadSamples
) -> list[PoseRecord]:
    """The instances of one split, in the JSON's order, checked against the train split's categories."""
    payload = load_coco(path, key)
    count = len(skeleton.keypoints)
    images: dict[Any, dict[str, Any]] = {}
    for entry in payload["images"]:
        images[entry.get("id") if isinstance(entry, dict) else None] = entry
    files: dict[Any, tuple[Path, int, int] | None] = {}
    out: list[PoseRecord] = []
    for ann in coco.checked_annotations(path, payload, bad, _COCO_HINT):
        image_id = ann["image_id"]
        entry = images.get(image_id)
        where = f"{path}: annotation id {ann.get('id')} (image id {image_id})"
        if not isinstance(entry, dict) or not isinstance(entry.get("file_name"), str):
            bad.report(
                "malformed_image",
                where,
                f'the "images" entry of image_id {image_id!r} has no "file_name"',
                f"Fix that entry; {_COCO_HINT}",
            )
            continue
        if image_id not in files:
            files[image_id] = coco.locate_image(path, entry, root, bad, "boxes and keypoints")
        located = files[image_id]
        if located is None:  # reported once for the image
            continue
        file, width, height = located
        where = f"{path}: annotation id {ann.get('id')} (image id {image_id}, {file.name})"
        record = _instance(ann, where, file, width, height, count, categories, bad)
        if record is not None:
            out.append(record)
    return out


SOURCE_CATEGORY = 0  # the one keypoint category of a `datasets` source


def read_source(
    source: DatasetSource, key: str, skeleton: Skeleton, bad: PoseBadSamples, limit: int | None
) -> list[PoseRecord]:
    """The instances of a `datasets` source (one row per image, parallel box and keypoint lists), checked as a
    COCO JSON's are; the image id is the row."""
    from trainers.data.source_rows import load_map_source, require_columns, source_rows, to_xywh

    dataset = load_map_source(source, key)
    require_columns(
        dataset, key, ("boxes", "keypoints"), "a keypoint set needs each instance's box and keypoints"
    )
    out: list[PoseRecord] = []
    for row in source_rows(dataset, key, ("boxes", "keypoints"), bad, limit):
        boxes, keypoints = row.values["boxes"] or [], row.values["keypoints"] or []
        if len(boxes) != len(keypoints):
            bad.report(
                "keypoint_count",
                row.where,
                f"{len(boxes)} boxes but {len(keypoints)} keypoint lists",
                f"Give every instance one box and one keypoint list ({key}.columns.boxes, .keypoints)",
            )
            continue
        for i, (box, points) in enumerate(zip(boxes, keypoints, strict=True)):
            flat = np.asarray(points, dtype=np.float64).ravel().tolist() if _numeric(points) else points
            ann = {
                "id": i,
                "image_id": row.image.row,
                "category_id": SOURCE_CATEGORY,
                "bbox": to_xywh(box, source.box_format, row.where),
                "keypoints": flat,
            }
            where = f"{row.where}: instance {i}"
            record = _instance(
                ann, where, row.image, row.width, row.height, len(skeleton.keypoints), [SOURCE_CATEGORY], bad
            )
            if record is not None:
                out.append(record)
    return out


def _numeric(points: Any) -> bool:
    try:
        np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError):
        return False
    return True


def _instance(
    ann: dict,
    where: str,
    file: ImageRef,
    width: int,
    height: int,
    count: int,
    categories: Sequence[int],
    bad: PoseBadSamples,
) -> PoseRecord | None:
    if ann.get("category_id") not in categories:
        bad.report(
            "unknown_category",
            where,
            f"category_id {ann.get('category_id')!r} is not among the train JSON's keypoint categories "
            f"{', '.join(map(str, categories))}",
            'Fix the category_id, or add the category (with its "keypoints" names) to the train JSON',
        )
        return None
    flat = ann.get("keypoints")
    if isinstance(flat, list) and len(flat) == 3 * count:
        wrong = [(i, v) for i, v in enumerate(flat) if isinstance(v, bool) or not isinstance(v, int | float)]
        if wrong:
            bad.report(
                "keypoint_value",
                where,
                f"keypoints[{wrong[0][0]}] is {json.dumps(wrong[0][1])}, not a number "
                f"({len(wrong)} such value(s))",
                "Write each keypoint as numbers x, y (pixels) and visibility v (0, 1 or 2)",
            )
            return None
        visibility = [v for v in flat[2::3] if v not in (0, 1, 2)]
        if visibility:
            bad.report(
                "keypoint_visibility",
                where,
                f"keypoint visibility {visibility[0]!r} is not 0, 1 or 2 ({len(visibility)} such value(s))",
                "Use COCO's visibility flags: 0 not labelled, 1 labelled but hidden, 2 labelled and visible",
            )
            return None
    else:
        got = f"{len(flat)} values" if isinstance(flat, list) else f"a {type(flat).__name__}, not a list"
        bad.report(
            "keypoint_count",
            where,
            f"keypoints holds {got}, but the skeleton has {count} keypoints (3 x {count} = "
            f"{3 * count} values: x, y, visibility each)",
            "Write one (x, y, v) triple per skeleton keypoint, v = 0 for an unlabelled one",
        )
        return None
    keypoints = np.asarray(flat, dtype=np.float64).reshape(count, 3)
    if ann.get("iscrowd") or not (keypoints[:, 2] > 0).any():
        bad.without_keypoints += 1
        return None
    bbox = ann.get("bbox")
    box = coco.checked_box(bbox, where, width, height, TOLERANCE, bad)
    if box is None:
        return None
    x, y, w, h = box
    t = TOLERANCE
    labelled = keypoints[:, 2] > 0
    px0, py0, px1, py1 = padded_box((x, y, w, h))
    for k in np.flatnonzero(labelled):
        kx, ky = keypoints[k, :2]
        if not (-t <= kx <= width - 1 + t and -t <= ky <= height - 1 + t):
            problem = f"keypoint {k} ({kx:g}, {ky:g}) lies outside the {width}x{height} image"
        elif not (px0 - t <= kx <= px1 + t and py0 - t <= ky <= py1 + t):
            problem = (
                f"keypoint {k} ({kx:g}, {ky:g}) lies outside its box {bbox} grown by {PADDING} (the crop "
                "the model sees)"
            )
        else:
            continue
        bad.report(
            "keypoint_outside",
            where,
            problem,
            "Fix the keypoint (x, y in image pixels), set its visibility to 0, or fix the box",
        )
        return None
    return PoseRecord(
        int(ann.get("id", -1)), int(ann["image_id"]), file, width, height, (x, y, w, h), keypoints
    )


# --------------------------------------------------------------------------------------------- crops


def crop_geometry(box: Sequence[float], input_size: tuple[int, int]) -> np.ndarray:
    """The 2x3 image → crop matrix of the image processor for `box` (x, y, w, h); `input_size` (width, height)."""
    from transformers.models.vitpose.image_processing_pil_vitpose import (
        box_to_center_and_scale,
        get_warp_matrix,
    )

    width, height = input_size
    center, scale = box_to_center_and_scale(
        box, image_width=width, image_height=height, padding_factor=PADDING
    )
    return get_warp_matrix(
        0.0, center * 2.0, np.array([width, height], dtype=np.float32) - 1.0, scale * 200.0
    )


def apply_matrix(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(N, 2) points through a 2x3 affine matrix."""
    return np.asarray(points, dtype=np.float64) @ matrix[:, :2].T.astype(np.float64) + matrix[:, 2].astype(
        np.float64
    )


def crop_instance(
    image: Image.Image, record: PoseRecord, input_size: tuple[int, int]
) -> tuple[Image.Image, np.ndarray]:
    """The instance crop (RGB, `input_size`) and its keypoints (K, 3) in crop pixels (centres at integers);
    visibility 0 where a keypoint leaves the crop."""
    from transformers.models.vitpose.image_processing_pil_vitpose import scipy_warp_affine

    width, height = input_size
    matrix = crop_geometry(record.box, input_size)
    pixels = scipy_warp_affine(np.asarray(image.convert("RGB"), dtype=np.float32), matrix, (height, width))
    crop = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "RGB")
    keypoints = record.keypoints.copy()
    keypoints[:, :2] = apply_matrix(matrix, keypoints[:, :2])
    outside = (
        (keypoints[:, 0] < -0.5)
        | (keypoints[:, 0] > width - 0.5)
        | (keypoints[:, 1] < -0.5)
        | (keypoints[:, 1] > height - 0.5)
    )
    keypoints[:, 2] = np.where(outside, 0.0, keypoints[:, 2])
    return crop, keypoints


class PoseDataset:
    """Items `{"image": crop (PIL RGB, input size), "keypoints": (K, 3) crop pixels, continuous (+0.5),
    "box": [x, y, w, h], "index": i}`: the layout `trainers.data.augment.AugmentedDataset` augments.
    `records[i]` keeps instance i as annotated (the scorer's ground truth, image pixels)."""

    def __init__(
        self,
        source: str | Path | DatasetSource,
        key: str,
        skeleton: Skeleton,
        categories: Sequence[int],
        input_size: tuple[int, int],
        images: str | Path | None = None,
        on_bad_sample: str = "fail",
        limit: int | None = None,
    ) -> None:
        self.key, self.skeleton, self.input_size = key, skeleton, tuple(input_size)
        where = source.path if isinstance(source, DatasetSource) else source
        self.bad_samples = PoseBadSamples(f"{where} ({key})", on_bad_sample)  # type: ignore[arg-type]
        if isinstance(source, DatasetSource):
            found = read_source(source, key, skeleton, self.bad_samples, limit)
        else:
            path = Path(source).expanduser()
            root = Path(images).expanduser() if images is not None else path.parent
            found = read_split(path, key, root, skeleton, categories, self.bad_samples)
        self.records = found[:limit] if limit is not None else found
        ensure_not_empty(len(self.records), self.bad_samples, "instances")
        self.bad_samples.log(len(self.records))

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        crop, keypoints = crop_instance(open_rgb(record.path), record, self.input_size)
        keypoints[:, :2] += 0.5
        return {"image": crop, "keypoints": keypoints, "box": list(record.box), "index": index}


def augmented(dataset: PoseDataset, config: Augment, seed: int) -> AugmentedDataset:
    """The shared seeded augmentation on the crops, with the skeleton's flip pairs and crop-sized zoom."""
    from dataclasses import replace

    crop = config.random_resized_crop
    if crop is not None:
        ratio = dataset.input_size[0] / dataset.input_size[1]
        crop = replace(crop, size=dataset.input_size, ratio=(ratio, ratio))
    return AugmentedDataset(
        dataset, replace(config, flip_pairs=dataset.skeleton.flip_indices(), random_resized_crop=crop), seed
    )


@dataclass
class PoseCollator:
    """`pixel_values` (the processor's rescale + normalise of the crops) and `labels` (B, K, 3): keypoints in
    crop pixels (centres at integers) with visibility, from which the task's loss builds heatmap targets on
    the model's own heatmap grid. `with_boxes` (evaluation) adds `boxes`, each instance's [x, y, w, h] in its
    image, as plain lists (kept out of dtype casts), for the processor's `post_process_pose_estimation`."""

    image_processor: Any
    with_boxes: bool = False

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, Any]:
        import torch

        crops = [f["image"] for f in features]
        batch = self.image_processor(images=crops, boxes=None, do_affine_transform=False, return_tensors="pt")
        keypoints = np.stack([np.asarray(f["keypoints"], dtype=np.float32) for f in features])
        keypoints[..., :2] -= 0.5
        out = {"pixel_values": batch["pixel_values"], "labels": torch.from_numpy(keypoints)}
        if self.with_boxes:
            out["boxes"] = [list(map(float, f["box"])) for f in features]
            out["index"] = [int(f["index"]) for f in features]
        return out
