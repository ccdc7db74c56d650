"""COCO-format detection data: reading and checking the JSON, the dataset, and the DETR collator.

Everything that can be checked without decoding pixels is checked at construction (categories, boxes
against the image size the JSON and the file header state, files present), so bad data fails in the first
second of a run with one paragraph naming the file, the annotation id and what to do, or, under
`on_bad_sample="skip"`, drops the image and counts it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trainers.data import coco, yolo
from trainers.data.augment import Augment, AugmentedDataset
from trainers.data.images import ImageRef, open_rgb
from trainers.data.source_config import DatasetSource
from trainers.data_policy import BadSamples, DataError, ensure_not_empty

logger = logging.getLogger(__name__)

_COCO_HINT = (
    'a COCO detection JSON holds "images" [{"id", "file_name", "width", "height"}], "annotations" '
    '[{"id", "image_id", "category_id", "bbox": [x, y, w, h]}] and "categories" [{"id", "name"}]'
)
# A box may overhang its image by this many pixels (rounding in exported annotations) before it is an error.
BOX_TOLERANCE = 1.0


@dataclass(frozen=True)
class Category:
    id: int
    name: str


@dataclass
class DetectionBadSamples(BadSamples):
    """`BadSamples` plus the boxes augmentation dropped (under `min_box_area`), for the run summary."""

    boxes_dropped_by_augmentation: int = 0

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "boxes_dropped_by_augmentation": self.boxes_dropped_by_augmentation}


@dataclass
class DetectionImage:
    """One image and its boxes (xyxy, absolute pixels of the original image), labels as class indices."""

    image_id: int
    path: ImageRef  # a file, or a `datasets` row (`trainers.data.images.RowImage`)
    width: int
    height: int
    boxes: np.ndarray  # (N, 4) float64
    labels: list[int]
    annotation_ids: list[int] = field(default_factory=list)


def load_coco(path: Path, key: str) -> dict[str, Any]:
    return coco.load_coco(path, key, "COCO detection JSON", _COCO_HINT)


def read_categories(path: Path, key: str) -> list[Category]:
    """The categories of a COCO JSON in id order (ids and names must be distinct), or a YOLO export's names."""
    if yolo.is_yolo(path):
        return [Category(i, name) for i, name in enumerate(yolo.class_names(yolo.locate(path, key)[1]))]
    payload = load_coco(path, key)
    categories = []
    for entry in payload["categories"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), int) or not entry.get("name"):
            raise DataError(f'{path}: category {entry!r} ({key}) needs an integer "id" and a "name". Fix it.')
        categories.append(Category(int(entry["id"]), str(entry["name"])))
    categories.sort(key=lambda c: c.id)
    ids, names = [c.id for c in categories], [c.name for c in categories]
    if not categories or len(set(ids)) != len(ids) or len(set(names)) != len(names):
        raise DataError(
            f"{path}: the categories of {key} must be a non-empty list with distinct ids and names, got "
            f'ids {ids} and names {names}. Fix the "categories" list.'
        )
    return categories


def read_split(
    path: Path, key: str, images_root: Path, categories: Sequence[Category], bad: BadSamples
) -> list[DetectionImage]:
    """The images of one split, in the JSON's order, checked against `categories` (the train split's); a YOLO
    export (`trainers.data.yolo`) is read into the same payload first."""
    payload = yolo.read_yolo(path, key, bad) if yolo.is_yolo(path) else load_coco(path, key)
    index = {c.id: i for i, c in enumerate(categories)}
    known = ", ".join(f"{c.id} ({c.name})" for c in categories)
    by_image: dict[int, list[dict[str, Any]]] = {}
    for ann in coco.checked_annotations(path, payload, bad, _COCO_HINT):
        by_image.setdefault(ann["image_id"], []).append(ann)
    out: list[DetectionImage] = []
    for entry in payload["images"]:
        image_id, name = entry.get("id"), entry.get("file_name")
        where = f"{path}: image id {image_id}"
        if not isinstance(image_id, int) or not isinstance(name, str) or not name:
            bad.report(
                "malformed_image",
                where,
                f'image entry {entry!r} has no integer "id" or no "file_name"',
                f"Fix that entry; {_COCO_HINT}",
            )
            continue
        located = coco.locate_image(path, entry, images_root, bad)
        if located is None:
            continue
        item = _annotations(path, entry, by_image.get(image_id, []), index, known, located[0], bad)
        if item is not None:
            out.append(item)
    return out


def source_categories(source: DatasetSource, key: str) -> list[Category]:
    """The classes of a `datasets` source: the names of its ClassLabel box-label feature (ids = their
    indices), else the distinct labels in sorted order (integers named by their value, or the names)."""
    from trainers.data.source_rows import label_names, load_map_source, require_columns
    from trainers.data.sources import column_values

    dataset = load_map_source(source, key)
    require_columns(
        dataset, key, ("boxes", "box_labels"), "a detection set needs each row's boxes and their classes"
    )
    names = label_names(dataset, "box_labels")
    if names is not None:
        return [Category(i, str(n)) for i, n in enumerate(names)]
    found = sorted({v for row in column_values(dataset, "box_labels") for v in (row or [])}, key=str)
    if not found:
        raise DataError(f"{key} ({source.path!r}): no row has a box label. Check {key}.columns.box_labels.")
    if all(isinstance(v, int) for v in found):
        return [Category(int(v), str(v)) for v in sorted(found)]
    return [Category(i, str(v)) for i, v in enumerate(sorted(map(str, found)))]


def read_source(
    source: DatasetSource, key: str, categories: Sequence[Category], bad: BadSamples, limit: int | None
) -> list[DetectionImage]:
    """The images of a `datasets` source, one per row: its boxes (`source.box_format`) and labels, checked as
    a COCO JSON's are; pixels stay in the memory-mapped table until an item is read."""
    from trainers.data.source_rows import load_map_source, require_columns, source_rows, to_xywh

    dataset = load_map_source(source, key)
    require_columns(
        dataset, key, ("boxes", "box_labels"), "a detection set needs each row's boxes and their classes"
    )
    index = {c.id: i for i, c in enumerate(categories)}
    by_name = {c.name: c.id for c in categories}
    known = ", ".join(f"{c.id} ({c.name})" for c in categories)
    source_fix = (  # a source has no "categories" list: its classes are data.train's ClassLabel names or labels
        f"Fix the row's label (column {dataset.mapper.columns['box_labels']!r}, {key}.columns.box_labels), or "
        "make it one of data.train's classes (its ClassLabel names, else the labels its rows use)"
    )
    out: list[DetectionImage] = []
    for row in source_rows(dataset, key, ("boxes", "box_labels"), bad, limit):
        boxes, labels = row.values["boxes"] or [], row.values["box_labels"] or []
        if len(boxes) != len(labels):
            bad.report(
                "malformed_box",
                row.where,
                f"{len(boxes)} boxes but {len(labels)} box labels",
                f"Give every box one label ({key}.columns.boxes and .box_labels must be parallel lists)",
            )
            continue
        entry = {"id": row.image.row, "width": row.width, "height": row.height}
        anns = [
            {
                "id": i,
                "category_id": by_name.get(label, label) if isinstance(label, str) else label,
                "bbox": to_xywh(box, source.box_format, row.where),
            }
            for i, (box, label) in enumerate(zip(boxes, labels, strict=True))
        ]
        item = _annotations(row.where, entry, anns, index, known, row.image, bad, source_fix)
        if item is not None:
            out.append(item)
    return out


def _annotations(
    path: Path | str,
    entry: dict,
    anns: list[dict],
    index: dict[int, int],
    known: str,
    file: ImageRef,
    bad: BadSamples,
    category_fix: str = 'Fix the category_id, or add the category to the train JSON\'s "categories"',
) -> DetectionImage | None:
    width, height = int(entry.get("width") or 0), int(entry.get("height") or 0)
    boxes, labels, ids = [], [], []
    for ann in anns:
        where = f"{path}: annotation id {ann.get('id')} (image id {entry['id']}, {file.name})"
        category = ann.get("category_id")
        if category not in index:
            bad.report(
                "unknown_category",
                where,
                f"category_id {category!r} is not among the train categories {known}",
                category_fix,
            )
            return None
        box = coco.checked_box(ann.get("bbox"), where, width, height, BOX_TOLERANCE, bad)
        if box is None:
            return None
        x, y, w, h = box
        boxes.append([max(0.0, x), max(0.0, y), min(float(width), x + w), min(float(height), y + h)])
        labels.append(index[category])
        ids.append(int(ann.get("id", -1)))
    return DetectionImage(
        int(entry["id"]), file, width, height, np.asarray(boxes, dtype=np.float64).reshape(-1, 4), labels, ids
    )


class DetectionDataset:
    """Items `{"image": PIL RGB, "boxes": (N, 4) xyxy pixels, "box_labels": [class index], "image_id": int}`.

    The layout `trainers.data.augment.AugmentedDataset` augments; `images[i]` keeps item i's annotation as
    read (the scorer's ground truth, in original pixels).
    """

    def __init__(
        self,
        source: str | Path | DatasetSource,
        key: str,
        categories: Sequence[Category],
        images: str | Path | None,
        on_bad_sample: str = "fail",
        limit: int | None = None,
    ) -> None:
        self.key = key
        self.categories = list(categories)
        self.classes = [c.name for c in self.categories]
        where = source.path if isinstance(source, DatasetSource) else source
        self.bad_samples = DetectionBadSamples(f"{where} ({key})", on_bad_sample)  # type: ignore[arg-type]
        if isinstance(source, DatasetSource):
            found = read_source(source, key, self.categories, self.bad_samples, limit)
        else:
            path = Path(source).expanduser()
            root = Path(images).expanduser() if images is not None else path.parent
            found = read_split(path, key, root, self.categories, self.bad_samples)
        self.images = found[:limit] if limit is not None else found
        ensure_not_empty(len(self.images), self.bad_samples, "images")
        self.bad_samples.log(len(self.images))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.images[index]
        return {
            "image": open_rgb(item.path),
            "boxes": item.boxes.copy(),
            "box_labels": list(item.labels),
            "image_id": item.image_id,
        }


class AugmentedDetection(AugmentedDataset):
    """The shared seeded augmentation, adding the boxes it drops to the split's `DetectionBadSamples`.

    The count is of this process's items (its shard under several ranks), summed over epochs.
    """

    def __init__(self, dataset: DetectionDataset, config: Augment, seed: int) -> None:
        super().__init__(dataset, config, seed)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = super().__getitem__(index)
        self.dataset.bad_samples.boxes_dropped_by_augmentation += int(item.get("dropped_boxes", 0))
        return item


def coco_targets(item: dict[str, Any], position: int) -> dict[str, Any]:
    """One item's boxes as the COCO annotation dict `DetrImageProcessor` takes (xyxy → xywh)."""
    boxes = np.asarray(item["boxes"], dtype=np.float64).reshape(-1, 4)
    annotations = [
        {
            "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
            "category_id": int(label),
            "area": float((x1 - x0) * (y1 - y0)),
            "iscrowd": 0,
        }
        for (x0, y0, x1, y1), label in zip(boxes, item["box_labels"], strict=True)
    ]
    return {"image_id": int(item.get("image_id", position)), "annotations": annotations}


@dataclass
class DetrCollator:
    """`pixel_values` + `pixel_mask` + per-image `labels` dicts (normalised cxcywh `boxes`, `class_labels`),
    exactly as `DetrImageProcessor(images, annotations=...)` prepares them: what `DetrForObjectDetection`
    takes. `with_sizes` (evaluation) adds `orig_sizes` (B, 2: height, width) for the post-processing and
    leaves the labels out."""

    image_processor: Any
    with_sizes: bool = False

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, Any]:
        import torch

        images = [f["image"] for f in features]
        if self.with_sizes:
            batch = self.image_processor(images=images, return_tensors="pt")
            sizes = torch.tensor([[im.height, im.width] for im in images], dtype=torch.long)
            return {
                "pixel_values": batch["pixel_values"],
                "pixel_mask": batch["pixel_mask"],
                "orig_sizes": sizes,
            }
        annotations = [coco_targets(f, i) for i, f in enumerate(features)]
        batch = self.image_processor(images=images, annotations=annotations, return_tensors="pt")
        return {
            "pixel_values": batch["pixel_values"],
            "pixel_mask": batch["pixel_mask"],
            "labels": batch["labels"],
        }
