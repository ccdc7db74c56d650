"""Reading a COCO captions file (`captions_train2017.json`: `images` with `id` and `file_name`, `annotations`
with `image_id` and `caption`) into `{file name: [captions]}`, for captioning and retrieval.

A problem is reported with the file and the line of the entry (`captions_val.json:12: annotation id 7 ...`):
JSON parsers give no line numbers, so the entries of the two top-level lists are decoded one at a time from
their positions in the text. What is wrong goes through the split's bad-sample policy (`BadSamples`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from trainers.data_policy import BadSamples, DataError

HINT = (
    'a COCO captions file holds "images" [{"id", "file_name"}] and "annotations" [{"id", "image_id", '
    '"caption"}], as captions_train2017.json does'
)


def is_coco_captions(payload: Any) -> bool:
    """A JSON object with `images` and `annotations` keys is read as COCO captions (a `{file: caption}` map
    never uses those two keys together as image names)."""
    return isinstance(payload, dict) and "images" in payload and "annotations" in payload


def _entries(text: str, key: str, path: Path) -> Iterator[tuple[int, Any]]:
    """(line, value) of each element of the top-level array `key`."""
    match = re.search(rf'"{key}"\s*:\s*\[', text)
    if match is None:
        raise DataError(f"{path}:1: {key!r} is not a list. Fix the file; {HINT}.")
    decoder, position, line, counted = json.JSONDecoder(), match.end(), 1, 0
    while True:
        while position < len(text) and text[position] in " \t\r\n,":
            position += 1
        if position >= len(text) or text[position] == "]":
            return
        line += text.count("\n", counted, position)
        counted = position
        value, position = decoder.raw_decode(text, position)
        yield line, value


def read_coco_captions(path: Path, bad: BadSamples) -> tuple[dict[str, list[str]], dict[str, str]]:
    """`{file_name: [captions]}` in `images` order, and `{file_name: "file:line"}` of each image entry.

    Refused (to `bad`): an image entry without an integer `id` or a `file_name`, a repeated `file_name`, an
    annotation whose `image_id` names no image or whose `caption` is blank, and an image without a caption.
    """
    text = path.read_text(encoding="utf-8")
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(
            f"{path}:{error.lineno}: not valid JSON ({error.msg} at column {error.colno}). Fix the syntax; {HINT}."
        ) from None
    if not is_coco_captions(payload) or not all(
        isinstance(payload[k], list) for k in ("images", "annotations")
    ):
        raise DataError(f'{path}:1: "images" and "annotations" must both be lists. Fix the file; {HINT}.')
    names: dict[int, str] = {}
    where: dict[str, str] = {}
    for line, entry in _entries(text, "images", path):
        ok = (
            isinstance(entry, dict)
            and isinstance(entry.get("id"), int)
            and isinstance(entry.get("file_name"), str)
        )
        if not ok or not entry["file_name"]:
            bad.report(
                "bad_entry",
                f"{path}:{line}",
                f"image entry {entry!r} has no integer id or no file_name",
                f"Fix it; {HINT}",
            )
            continue
        if entry["file_name"] in where:
            bad.report(
                "duplicate",
                f"{path}:{line}",
                f"file_name {entry['file_name']!r} is listed twice (first at {where[entry['file_name']]})",
                "Keep one image entry per file",
            )
            continue
        names[entry["id"]] = entry["file_name"]
        where[entry["file_name"]] = f"{path}:{line}"
    captions: dict[str, list[str]] = {name: [] for name in where}
    for line, ann in _entries(text, "annotations", path):
        image_id = ann.get("image_id") if isinstance(ann, dict) else None
        caption = ann.get("caption") if isinstance(ann, dict) else None
        label = f"annotation id {ann.get('id')}" if isinstance(ann, dict) else "annotation"
        if image_id not in names:
            bad.report(
                "unknown_image",
                f"{path}:{line}",
                f"{label}: image_id {image_id!r} names no image entry",
                'Fix the image_id or add the image to "images"',
            )
        elif not isinstance(caption, str) or not caption.strip():
            bad.report(
                "bad_entry",
                f"{path}:{line}",
                f"{label}: caption {caption!r} is blank or not a string",
                "Fix the caption",
            )
        else:
            captions[names[image_id]].append(caption.strip())
    for name in [n for n, found in captions.items() if not found]:
        bad.report(
            "bad_entry",
            where[name],
            f"image {name!r} has no caption",
            "Add its captions or remove the image entry",
        )
        del captions[name]
    return captions, where
