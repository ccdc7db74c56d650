"""A `datasets` source read row by row for the tasks that check their annotations before training.

Detection, pose, retrieval and prompted generation check every annotation at construction (boxes inside
their image, keypoint counts, task tokens), as they do for their own files. `source_rows` gives them, per
row, the image reference (`RowImage`: decoded only when an item is read), the image size read from the
stored bytes' header (no pixel decode) and the mapped non-image values read from the Arrow table, so each
task converts rows into its own records and runs its own checks on them.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from trainers.data.images import RowImage
from trainers.data.source_config import DatasetSource
from trainers.data_policy import BadSamples, DataError
from trainers.errors import RecipeError


@dataclass(frozen=True)
class SourceRow:
    """One row: where it is (for messages), its image, the image's width and height, the mapped values."""

    where: str
    image: RowImage
    width: int
    height: int
    values: dict[str, Any]


def load_map_source(source: DatasetSource, key: str) -> Any:
    """The source as a map-style `SourceDataset` (these tasks index their items); streaming is refused."""
    from trainers.data.sources import load_source

    source.validate(key)
    if source.streaming:
        raise RecipeError(
            f"{key}.streaming=True: this task checks every annotation before training and indexes its items, "
            f"so its sources are map-style; set {key}.streaming=False (rows stay memory-mapped and images are "
            "decoded one at a time)."
        )
    return load_source(source, key)


def require_columns(dataset: Any, key: str, needed: Sequence[str], what: str) -> None:
    """A RecipeError naming `key.columns.<name>` for each task key this task needs but the source leaves unmapped."""
    unmapped = [name for name in needed if name not in dataset.mapper.columns]
    if unmapped:
        listed = ", ".join(f"{key}.columns.{name}" for name in unmapped)
        raise RecipeError(
            f"{listed} not set: {what}. Map {'it' if len(unmapped) == 1 else 'them'} to the dataset's "
            f"column{'' if len(unmapped) == 1 else 's'} (a dotted name reads a struct field, e.g. objects.bbox)."
        )


def source_rows(
    dataset: Any, key: str, keys: Sequence[str], bad: BadSamples, limit: int | None = None
) -> Iterator[SourceRow]:
    """The rows of a loaded source, in table order (the first `limit`), with the values of `keys`.

    A row whose image cannot be read (missing file, bytes that are not an image) goes to `bad` and is left out.
    """
    from trainers.data.sources import column_values

    count = len(dataset) if limit is None else min(limit, len(dataset))
    values = {name: column_values(dataset, name)[:count] for name in keys}
    sizes = image_sizes(dataset, count)
    path = dataset.mapper.source.path
    for row in range(count):
        where = f"{key} row {row} ({path})"
        size = sizes[row]
        if isinstance(size, str):
            bad.report(
                "corrupt_image",
                where,
                f"cannot read its image ({size})",
                f"Replace the image or fix {key}.columns.image",
            )
            continue
        yield SourceRow(
            where, RowImage(dataset, row, key), size[0], size[1], {n: values[n][row] for n in keys}
        )


def image_sizes(dataset: Any, count: int) -> list[tuple[int, int] | str]:
    """(width, height) of the first `count` rows' images from their headers, or why one cannot be read."""
    import datasets

    column = dataset.mapper.columns["image"]
    table = dataset.table.select_columns([column])
    if isinstance(table.features[column], datasets.Image):
        table = table.cast_column(column, datasets.Image(decode=False))  # {"bytes", "path"}: no decode
    base: Path | None = dataset.mapper.base
    out: list[tuple[int, int] | str] = []
    for value in table.select(range(count))[column]:
        if isinstance(value, dict) and value.get("bytes"):
            opened: Any = io.BytesIO(value["bytes"])
        elif isinstance(value, dict | str):
            name = Path(value["path"] if isinstance(value, dict) else value)
            opened = name if name.is_absolute() or base is None else base / name
        else:
            out.append(f"the image column holds {type(value).__name__}, not an image or a file name")
            continue
        try:
            with Image.open(opened) as image:
                out.append(image.size)
        except (OSError, UnidentifiedImageError, TypeError) as error:
            out.append(str(error))
    return out


def label_names(dataset: Any, task_key: str) -> list[str] | None:
    """The class names of a ClassLabel column mapped to `task_key` (a list of them, or a struct field), if any."""
    import datasets

    column = dataset.mapper.columns.get(task_key)
    if column is None:
        return None
    top, _, sub = column.partition(".")
    feature = dataset.table.features[top]
    for step in (sub,) if sub else ():
        if isinstance(feature, datasets.List | datasets.Sequence):
            feature = feature.feature
        feature = feature[step] if isinstance(feature, dict) else None
    while isinstance(feature, datasets.List | datasets.Sequence):
        feature = feature.feature
    return list(feature.names) if isinstance(feature, datasets.ClassLabel) else None


def to_xywh(box: Any, box_format: str, where: str) -> Any:
    """A box as COCO's [x, y, w, h] from the source's stated format ("xywh" or "xyxy" corners)."""
    if box_format == "xywh" or not (isinstance(box, list | tuple) and len(box) == 4):
        return list(box) if isinstance(box, tuple) else box
    if box_format == "xyxy":
        x0, y0, x1, y1 = box
        return [x0, y0, x1 - x0, y1 - y0]
    raise DataError(f"{where}: unknown box format {box_format!r}; use xywh or xyxy.")


__all__ = [
    "SourceRow",
    "image_sizes",
    "label_names",
    "load_map_source",
    "require_columns",
    "source_rows",
    "to_xywh",
]
