"""Reading COCO-format JSON (detection and keypoints): the file, its image entries and its boxes.

Detection and pose read the same layout (`images`, `annotations` with an xywh `bbox` in pixels, `categories`)
and check it the same way before any pixel is decoded; what is wrong goes through the split's bad-sample
policy (`trainers.data_policy.BadSamples`), so one paragraph names the file, the entry and the fix.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from trainers.data_policy import BadSamples, DataError
from trainers.text_files import read_utf8

Box = tuple[float, float, float, float]  # x, y, width, height in pixels


def load_coco(path: Path, key: str, kind: str, hint: str) -> dict[str, Any]:
    """The parsed JSON named by recipe key `key`, with list `images`, `annotations` and `categories`.

    `kind` names the format in the not-found message ("COCO detection JSON"), `hint` describes its layout.
    """
    if not path.is_file():
        raise DataError(f"{path}: not found ({key}). Point {key} at a {kind}; {hint}.")
    try:
        payload = json.loads(read_utf8(path, DataError, key))
    except json.JSONDecodeError as error:
        raise DataError(
            f"{path}: not valid JSON ({error.msg} at line {error.lineno}) ({key}). Fix the file; {hint}."
        ) from None
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(payload.get(k), list)]
    if not isinstance(payload, dict) or missing:
        raise DataError(
            f"{path}: the JSON named by {key} has no list {missing}. {hint[0].upper()}{hint[1:]}."
        )
    return payload


def checked_annotations(
    path: Path, payload: dict[str, Any], bad: BadSamples, hint: str
) -> list[dict[str, Any]]:
    """The annotations, in file order, that are JSON objects naming an image id of `images`; any other is
    reported ("malformed_annotation" / "unknown_image") and left out, for detection and pose alike."""
    known = {entry.get("id") for entry in payload["images"] if isinstance(entry, dict)}
    out = []
    for position, ann in enumerate(payload["annotations"]):
        if not isinstance(ann, dict):
            bad.report(
                "malformed_annotation",
                f"{path}: annotations[{position}]",
                f"{json.dumps(ann)[:80]} is not a JSON object",
                f"Write each annotation as an object; {hint}",
            )
            continue
        image_id = ann.get("image_id")
        if image_id not in known:
            bad.report(
                "unknown_image",
                f"{path}: annotation id {ann.get('id')} (annotations[{position}])",
                f'image_id {image_id!r} names no entry of "images"',
                f'Fix the image_id, or add the image to "images"; {hint}',
            )
            continue
        out.append(ann)
    return out


def header_size(path: Path) -> tuple[int, int] | str:
    """(width, height) from the file header, or why PIL cannot open it."""
    try:
        with Image.open(path) as image:
            return image.size
    except (UnidentifiedImageError, OSError) as error:
        return str(error)


def locate_image(
    path: Path, entry: dict[str, Any], root: Path, bad: BadSamples, in_pixels: str = "boxes"
) -> tuple[Path, int, int] | None:
    """(file, width, height) of one `images` entry whose file exists, opens and has the size the JSON states;
    None once a problem is reported. `in_pixels` says what the JSON measures in the image's pixels."""
    name = entry["file_name"]
    where = f"{path}: image id {entry.get('id')}"
    file = Path(name) if Path(name).is_absolute() else root / name
    if not file.is_file():
        bad.report(
            "missing_image",
            where,
            f"image file {file} not found (data.images is {root})",
            "Add the image, fix its file_name, or point data.images at the folder holding it",
        )
        return None
    size = header_size(file)
    if isinstance(size, str):
        bad.report("corrupt_image", where, f"cannot read the image {file} ({size})", "Replace the file")
        return None
    width, height = entry.get("width", size[0]), entry.get("height", size[1])
    if (width, height) != size:
        bad.report(
            "size_mismatch",
            where,
            f"the JSON says {width}x{height} but {file} is {size[0]}x{size[1]}",
            f"Fix the image's width and height in the JSON ({in_pixels} are in its pixels)",
        )
        return None
    return file, int(width), int(height)


def checked_box(
    bbox: Any, where: str, width: int, height: int, tolerance: float, bad: BadSamples
) -> Box | None:
    """An annotation's `bbox` as (x, y, w, h) when it is four numbers with a positive size inside its image
    (overhanging by at most `tolerance` pixels); None once a problem is reported."""
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, int | float) for v in bbox)):
        bad.report(
            "malformed_box",
            where,
            f"bbox {bbox!r} is not [x, y, width, height]",
            "Write the box as four numbers in pixels, COCO's x, y, w, h",
        )
        return None
    x, y, w, h = (float(v) for v in bbox)
    if w <= 0 or h <= 0:
        bad.report(
            "empty_box",
            where,
            f"bbox {bbox} has a non-positive width or height",
            "Fix the box (COCO boxes are x, y, width, height, not x1, y1, x2, y2) or remove the annotation",
        )
        return None
    t = tolerance
    if x < -t or y < -t or x + w > width + t or y + h > height + t:
        bad.report(
            "box_outside_image",
            where,
            f"bbox {bbox} (x, y, w, h) reaches outside the {width}x{height} image",
            "Fix the box or the image's width/height (boxes are x, y, width, height in pixels)",
        )
        return None
    return x, y, w, h
