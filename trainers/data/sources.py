"""Hugging Face `datasets` as a data source for every task.

Users of this field keep their data as `datasets` datasets; a recipe names one with `DatasetSource`:

- `kind="disk"`: a directory written by `save_to_disk` (a Dataset or a DatasetDict);
- `kind="hub"`: a Hub dataset name, when the Hub is reachable (otherwise one paragraph, at once, saying how
  to provide it; with HF offline mode on, `datasets` uses its cache);
- `kind="imagefolder" | "json" | "csv"`: a directory (or one file) loaded through `load_dataset`; for JSON
  and CSV the image column holds file names, relative to `image_dir` (default: the data file's folder).

`columns` maps the keys tasks read (`image`, `caption`, `label`, `boxes`, `box_labels`, `keypoints`, `prefix`,
`suffix`, `messages`) to the dataset's column names; a dotted name reads a field of a struct column (`objects.bbox`). A mapped column
the dataset lacks is a RecipeError naming the key and listing the columns that exist.

Nothing is loaded into memory up front: `save_to_disk` / `load_dataset` tables are memory-mapped Arrow
files, only the mapped columns are read, and an image is decoded (PIL) when its item is accessed, one at a
time. `streaming=True` gives an iterable dataset that reads rows as it goes.

How it plugs in: a split of a task's data config (`data.train`, `data.val`, an extra validation set, the test
split) may be a `DatasetSource` instead of the task's own files (`trainers.data.source_config`, torch-free);
the task's `build` calls `load_source(source, key="data.train")` and wraps the dicts it yields (captioning:
`CaptionSourceDataset`, classification: `SourceClassificationDataset`); detection, pose, retrieval and
prompted generation read the rows through `trainers.data.source_rows` into their own records and checks. So
augmentation, collation and evaluation are the same as for the task's own files.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset, IterableDataset

from trainers.data.source_config import Columns, DatasetSource
from trainers.data_policy import DataError
from trainers.errors import RecipeError

_BUILDERS = {"imagefolder": "imagefolder", "json": "json", "csv": "csv"}


class DatasetNotAvailableError(RecipeError):
    """A named `datasets` source cannot be found or loaded; the message says how to provide it."""


# --------------------------------------------------------------------------------------------- loading


def load_source(source: DatasetSource, key: str = "data.source") -> Dataset | IterableDataset:
    """The source as a torch map-style dataset (or iterable, with `streaming`) of dicts with the mapped keys.

    `key` is the recipe key of `source`, used in every error message.
    """
    if source.kind not in ("disk", "hub", *_BUILDERS):
        raise RecipeError(
            f"{key}.kind must be one of disk, hub, imagefolder, json, csv; got {source.kind!r}."
        )
    table = _load_table(source, key)
    columns = _check_columns(table, source, key)
    table = table.select_columns(sorted({c.split(".")[0] for c in columns.values()}))  # unmapped: never read
    view = StreamingSourceDataset if source.streaming else SourceDataset
    return view(table, columns, source, _image_base(source), key)


def _load_table(source: DatasetSource, key: str) -> Any:
    import datasets

    if source.kind == "disk":
        return _from_disk(source, key)
    if source.kind == "hub":
        return _from_hub(source, key)
    path = Path(source.path).expanduser()
    if not path.exists():
        layout = (
            "directory (one subfolder per class, optionally under train/ validation/ test/)"
            if source.kind == "imagefolder"
            else "directory or file"
        )
        raise DatasetNotAvailableError(
            f"{key}.path: {source.path!r} does not exist. Point it at the {source.kind} {layout}."
        )
    kwargs: dict[str, Any] = {"cache_dir": source.cache_dir, "streaming": source.streaming}
    if path.is_file():
        if source.kind == "imagefolder":
            raise RecipeError(f"{key}.path: {source.path!r} is a file; an imagefolder source is a directory.")
        kwargs["data_files"] = {source.split: str(path)}
    else:
        kwargs["data_dir"] = str(path)
    try:
        loaded = datasets.load_dataset(_BUILDERS[source.kind], **kwargs)
    except (ValueError, FileNotFoundError, datasets.exceptions.DatasetGenerationError) as error:
        raise DatasetNotAvailableError(
            f"{key}: cannot load {source.path!r} as {source.kind} ({_first_line(error)}). Check the directory "
            "layout: imagefolder wants one subfolder per class (optionally under train/ validation/ test/), "
            "json / csv want files named by split (train.jsonl, validation.csv, ...) or one file."
        ) from error
    return _pick_split(loaded, source, key)


def _from_disk(source: DatasetSource, key: str) -> Any:
    import datasets

    path = Path(source.path).expanduser()
    markers = ("dataset_info.json", "state.json", "dataset_dict.json")
    if not path.is_dir() or not any((path / m).is_file() for m in markers):
        what = "does not exist" if not path.exists() else "is not a directory written by save_to_disk"
        raise DatasetNotAvailableError(
            f"{key}.path: {source.path!r} {what} (it holds no dataset_dict.json / state.json). Write it with "
            "`dataset.save_to_disk(DIR)` (a Dataset or a DatasetDict) and point the path there, or use "
            f"{key}.kind=imagefolder|json|csv for a plain directory of files."
        )
    loaded = datasets.load_from_disk(str(path))  # memory-maps the Arrow files; reads no rows
    if isinstance(loaded, datasets.Dataset) and source.split not in ("train", str(loaded.split or "train")):
        raise RecipeError(
            f"{key}.split={source.split!r}: {source.path!r} holds a single Dataset, not a DatasetDict of splits; "
            "save each split to its own directory, or save a DatasetDict."
        )
    table = _pick_split(loaded, source, key)
    return table.to_iterable_dataset() if source.streaming else table


def _from_hub(source: DatasetSource, key: str) -> Any:
    import datasets

    from trainers import hub_probe

    plan = hub_probe.hub_plan()
    what = f"dataset {source.path!r}"
    if plan.local_only and not datasets.config.HF_HUB_OFFLINE:
        # datasets would retry for ~25 s before failing; only its own offline mode (read from HF_HUB_OFFLINE
        # when it is imported) makes it consult the cache alone
        raise DatasetNotAvailableError(f"{key}: {plan.problem(what)}. {_how_to_provide_dataset(source, key)}")
    try:
        loaded = datasets.load_dataset(
            source.path,
            source.name,
            split=source.split,
            revision=source.revision,
            streaming=source.streaming,
            cache_dir=source.cache_dir,
        )
    except (ConnectionError, FileNotFoundError, OSError, ValueError) as error:
        problem = plan.problem(what)
        raise DatasetNotAvailableError(
            f"{key}: {problem} (datasets said: {_first_line(error)}). {_how_to_provide_dataset(source, key)}"
        ) from error
    return _pick_split(loaded, source, key)


def _how_to_provide_dataset(source: DatasetSource, key: str) -> str:
    return (
        f"To provide it: on a machine with Hub access run `datasets.load_dataset({source.path!r}).save_to_disk(DIR)`, "
        f"copy DIR here and set {key}.kind=disk {key}.path=DIR; or copy that machine's datasets cache "
        "(HF_DATASETS_CACHE, by default $HF_HOME/datasets) to the same place here and set HF_HUB_OFFLINE=1 so "
        "`datasets` reads it without the Hub."
    )


def _pick_split(loaded: Any, source: DatasetSource, key: str) -> Any:
    import datasets

    if isinstance(loaded, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        if source.split not in loaded:
            raise RecipeError(
                f"{key}.split={source.split!r}: {source.path!r} has no split {source.split!r}; its splits are: "
                f"{', '.join(loaded)}. Set {key}.split to one of them."
            )
        return loaded[source.split]
    return loaded


def _column_names(table: Any) -> list[str]:
    names = table.column_names
    if names is None and getattr(table, "features", None) is not None:  # some streaming tables
        names = list(table.features)
    return list(names or [])


def _check_columns(table: Any, source: DatasetSource, key: str) -> dict[str, str]:
    existing = _column_names(table)
    features = getattr(table, "features", None) or {}
    columns = source.columns.mapped()
    for task_key, column in columns.items():
        top, _, sub = column.partition(".")
        if top not in existing:
            raise RecipeError(
                f"{key}.columns.{task_key}={column!r}: {source.path!r} (split {source.split!r}) has no column "
                f"{top!r}; its columns are: {', '.join(existing)}. Set {key}.columns.{task_key} to one of them "
                f"(or to none if the task does not need {task_key!r})."
            )
        if sub:
            fields = _struct_fields(features.get(top))
            if fields is not None and sub not in fields:
                raise RecipeError(
                    f"{key}.columns.{task_key}={column!r}: column {top!r} of {source.path!r} has no field {sub!r}; "
                    f"its fields are: {', '.join(fields)}."
                )
    if "image" not in columns:
        raise RecipeError(
            f"{key}.columns.image is not set; every task needs an image column ({', '.join(existing)})."
        )
    return columns


def _struct_fields(feature: Any) -> list[str] | None:
    import datasets

    if isinstance(feature, dict):
        return list(feature)
    if isinstance(feature, datasets.List) and isinstance(feature.feature, dict):  # a list of structs
        return list(feature.feature)
    return None


def _image_base(source: DatasetSource) -> Path | None:
    if source.image_dir is not None:
        return Path(source.image_dir).expanduser()
    if source.kind in ("json", "csv"):
        path = Path(source.path).expanduser()
        return path.parent if path.is_file() else path
    return None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# ----------------------------------------------------------------------------------------------- items


class _Mapper:
    """Turns one dataset row into the task's dict: renamed keys, a decoded PIL image, numpy geometry."""

    def __init__(self, columns: dict[str, str], source: DatasetSource, base: Path | None, key: str) -> None:
        self.columns, self.source, self.base, self.key = columns, source, base, key

    def __call__(self, row: dict[str, Any], where: str) -> dict[str, Any]:
        item: dict[str, Any] = {}
        for task_key, column in self.columns.items():
            top, _, sub = column.partition(".")
            value = row[top]
            if sub:
                value = value[sub] if isinstance(value, dict) else [v[sub] for v in value]
            item[task_key] = value
        item["image"] = self._image(item["image"], where)
        if item.get("boxes") is not None:
            item["boxes"] = np.asarray(item["boxes"], dtype=np.float64).reshape(-1, 4)
        if item.get("keypoints") is not None:
            item["keypoints"] = np.asarray(item["keypoints"], dtype=np.float64)
        return item

    def _image(self, value: Any, where: str) -> Image.Image:
        """An Image feature arrives decoded (by `datasets`, on this access); a path string is opened here."""
        if isinstance(value, Image.Image):
            image = value
        elif isinstance(value, str | os.PathLike):
            path = Path(value)
            if not path.is_absolute() and self.base is not None:
                path = self.base / path
            try:
                image = Image.open(path)
                image.load()
            except (OSError, UnidentifiedImageError) as error:
                raise DataError(
                    f"{path}: cannot read the image ({_first_line(error)}); it is {where} of {self.key} "
                    f"({self.source.path!r}). Replace the file or fix the {self.key}.columns.image values "
                    f"(file names relative to {self.key}.image_dir, now {str(self.base)!r})."
                ) from error
        else:
            raise DataError(
                f"{where} of {self.key} ({self.source.path!r}): column {self.columns['image']!r} holds "
                f"{type(value).__name__}, not an image or an image file name; set {self.key}.columns.image to "
                "the image column."
            )
        if self.source.image_mode and image.mode != self.source.image_mode:
            image = image.convert(self.source.image_mode)
        return image


class SourceDataset(Dataset):
    """Map-style view of one split; `table` stays memory-mapped and each `[i]` decodes only row i."""

    def __init__(
        self, table: Any, columns: dict[str, str], source: DatasetSource, base: Path | None, key: str
    ) -> None:
        self.table = table
        self.mapper = _Mapper(columns, source, base, key)

    @property
    def label_names(self) -> list[str] | None:
        """Class names of a ClassLabel label column (imagefolder's folder names), for the model's id2label."""
        column = self.mapper.columns.get("label")
        feature = self.table.features.get(column) if column else None
        return list(feature.names) if hasattr(feature, "names") else None

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.mapper(self.table[int(index)], f"row {index}")

    def image(self, index: int, nth: int | None = None) -> Image.Image:
        """Row `index`'s image alone (the other columns are not read); `nth`: the nth of a list of images."""
        column = self.mapper.columns["image"]
        value = self.table[int(index)][column]
        if nth is not None:
            value = value[nth]
        where = f"row {index}" + (f" image {nth}" if nth is not None else "")
        return self.mapper._image(value, where)


def column_values(dataset: SourceDataset, task_key: str) -> list[Any]:
    """Every row's value of a mapped non-image column (captions, labels), read from the Arrow table alone:
    no image is decoded (a caption task's references, a classifier's label set)."""
    column = dataset.mapper.columns[task_key]
    top, _, sub = column.partition(".")
    values = list(dataset.table.select_columns([top])[top])
    if sub:
        values = [v[sub] if isinstance(v, dict) else [x[sub] for x in v] for v in values]
    return values


class StreamingSourceDataset(IterableDataset):
    """Iterable view: rows are read (and images decoded) as iteration reaches them."""

    def __init__(
        self, table: Any, columns: dict[str, str], source: DatasetSource, base: Path | None, key: str
    ) -> None:
        self.table = table
        self.mapper = _Mapper(columns, source, base, key)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for index, row in enumerate(self.table):
            yield self.mapper(row, f"row {index}")


__all__ = [
    "Columns",
    "DatasetNotAvailableError",
    "DatasetSource",
    "SourceDataset",
    "StreamingSourceDataset",
    "column_values",
    "load_source",
]
