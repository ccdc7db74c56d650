"""Labelled images from an image folder (one subfolder per class) or a CSV / JSONL list, and their collator.

Everything that can be checked without decoding is checked at construction (layout, labels, files present;
under `on_bad_sample="skip"` every image is decoded once too), so a wrong folder fails in the first second
of a run. Each message names the file (and line) and the recipe key that points at it.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from trainers.data import jsonl
from trainers.data.augment import Augment, augment
from trainers.data.augment import Sample as AugmentSample
from trainers.data.epoch import EpochAware
from trainers.data.source_config import DatasetSource
from trainers.data_policy import BadSamples, DataError, ensure_not_empty
from trainers.errors import RecipeError
from trainers.tasks.classification.config import ClassificationData
from trainers.text_files import read_utf8

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
LIST_SUFFIXES = (".csv", ".jsonl")
_LIST_HINT = (
    'a CSV needs an "image,label" header; a JSONL line looks like {"image": "cat/001.png", "label": "cat"}'
)
_MAX_LISTED = 8

ImageTransform = Callable[[Image.Image], Image.Image]


@dataclass(frozen=True)
class Sample:
    path: Path
    label: str
    where: str  # file[:line] for messages


def _listed(items: Sequence[str]) -> str:
    shown = ", ".join(repr(i) for i in items[:_MAX_LISTED])
    return shown + (f" and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else "")


# -------------------------------------------------------------------------------------------- reading


def _class_folders(root: Path, key: str) -> list[Path]:
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DataError(
            f"{root}: image folder named by {key} has no class subfolders. Put each class's images in a "
            f"subfolder named after the class ({root}/<class>/001.png), or point {key} at a CSV / JSONL list."
        )
    return folders


def _read_folder(root: Path, key: str) -> list[Sample]:
    samples: list[Sample] = []
    for folder in _class_folders(root, key):
        images = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise DataError(
                f"{folder}: class folder {folder.name!r} of the image folder named by {key} holds no images "
                f"({', '.join(IMAGE_SUFFIXES)}). Add its images or remove the folder: every subfolder is a class."
            )
        samples.extend(Sample(p, folder.name, str(p)) for p in images)
    return samples


def _image_path(value: str, images_root: Path) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else images_root / path


def _read_csv(path: Path, key: str, images_root: Path, bad: BadSamples) -> list[Sample]:
    samples: list[Sample] = []
    with io.StringIO(read_utf8(path, DataError, key), newline="") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in reader.fieldnames or []]
        if "image" not in columns or "label" not in columns:
            raise DataError(
                f'{path}:1: the list named by {key} has columns {columns or "none"}; it needs "image" and '
                f'"label". Fix the header; {_LIST_HINT}.'
            )
        for row in reader:
            where = f"{path}:{reader.line_num}"
            row = {(k or "").strip(): (v or "").strip() for k, v in row.items() if k is not None}
            if not row.get("image") or not row.get("label"):
                bad.report(
                    "malformed_line", where, 'no "image" or no "label" value', f"Fix that line; {_LIST_HINT}"
                )
                continue
            samples.append(Sample(_image_path(row["image"], images_root), row["label"], where))
    return samples


def _read_jsonl(path: Path, key: str, images_root: Path, bad: BadSamples) -> list[Sample]:
    samples: list[Sample] = []
    for where, record in jsonl.records(path, bad, _LIST_HINT):
        image = record.get("image") if isinstance(record, dict) else None
        label = record.get("label") if isinstance(record, dict) else None
        if not isinstance(image, str) or not image or not isinstance(label, str | int) or str(label) == "":
            bad.report(
                "malformed_line", where, 'no usable "image" and "label"', f"Fix that line; {_LIST_HINT}"
            )
            continue
        samples.append(Sample(_image_path(image, images_root), str(label), where))
    return samples


def read_split(
    source: str | Path, key: str, bad: BadSamples, images: str | Path | None = None
) -> list[Sample]:
    """The samples of one split, in file order (image folder: class by class, files sorted)."""
    path = Path(source).expanduser()
    if path.is_dir():
        return _read_folder(path, key)
    if not path.is_file():
        raise DataError(
            f"{path}: not found ({key}). Point {key} at an image folder (one subfolder per class) or at a "
            f"{' / '.join(LIST_SUFFIXES)} list; {_LIST_HINT}."
        )
    images_root = Path(images).expanduser() if images is not None else path.parent
    if path.suffix.lower() == ".csv":
        return _read_csv(path, key, images_root, bad)
    if path.suffix.lower() == ".jsonl":
        return _read_jsonl(path, key, images_root, bad)
    raise DataError(
        f"{path}: {key} is neither an image folder nor a {' / '.join(LIST_SUFFIXES)} list. Rename or convert it; "
        f"{_LIST_HINT}."
    )


def discover_classes(data: ClassificationData) -> list[str]:
    """Class names in label-id order: `data.labels`, else the train split's, sorted; `num_labels` checked."""
    if data.labels is not None:
        classes = [str(c) for c in data.labels]
        repeated = sorted({c for c in classes if classes.count(c) > 1})
        if repeated or not classes:
            raise RecipeError(
                f"data.labels must be distinct class names, got {list(data.labels)}"
                + (f" (repeated: {repeated})" if repeated else "")
                + "."
            )
        where = "data.labels"
    elif isinstance(data.train, DatasetSource):
        from trainers.data.sources import load_source

        train = load_source(data.train, "data.train")
        classes = list(train.label_names or sorted(set(source_labels(train, "data.train"))))
        where = f"the train split ({data.train.path})"
    else:
        samples = read_split(
            data.train, "data.train", BadSamples(str(data.train), data.on_bad_sample), data.images
        )
        classes = sorted({s.label for s in samples})
        where = f"the train split ({data.train})"
    if len(classes) < 2:
        error = RecipeError if where == "data.labels" else DataError
        raise error(
            f"{where} has {len(classes)} class ({_listed(classes)}); classification needs at least two. Add "
            "the other classes (a subfolder or label value each in the data, and their names in data.labels "
            "when it is set), or point data.train at the right data."
        )
    if data.num_labels is not None and data.num_labels != len(classes):
        raise RecipeError(
            f"data.num_labels={data.num_labels}, but {where} has {len(classes)} classes: {_listed(classes)}. "
            f"Set data.num_labels={len(classes)} (or none, to take it from the data), or fix the data."
        )
    return classes


def label_maps(classes: Sequence[str]) -> dict[str, Any]:
    """The model config's label fields: what `from_pretrained` / the config take as keyword arguments."""
    return {
        "num_labels": len(classes),
        "id2label": dict(enumerate(classes)),
        "label2id": {name: i for i, name in enumerate(classes)},
    }


def _check_labels(samples: Sequence[Sample], classes: Sequence[str], key: str, source: str | Path) -> None:
    known = set(classes)
    unknown = [s for s in samples if s.label not in known]
    if not unknown:
        return
    labels = sorted({s.label for s in unknown})
    first = unknown[0]
    if Path(source).is_dir():
        where = f"{Path(source) / first.label}: class folder"
        fix = f"Rename the folder to one of the classes, or add {first.label!r} to data.labels / the train split"
    else:
        where = f"{first.where}: label"
        fix = f"Fix the label, or add {first.label!r} to data.labels / the train split"
    raise DataError(
        f"{where} {first.label!r} in {key} is not among the classes {_listed(list(classes))}"
        f" ({len(unknown)} sample(s) with unknown labels {_listed(labels)}). {fix}."
    )


def _round_robin(samples: list[Sample], classes: Sequence[str], limit: int) -> list[Sample]:
    """The first `limit` samples taking one per class in turn, so a limit never drops whole classes."""
    by_class: dict[str, list[Sample]] = {c: [] for c in classes}
    for s in samples:
        by_class[s.label].append(s)
    out: list[Sample] = []
    queues = [q for q in by_class.values() if q]
    position = 0
    while len(out) < limit and queues:
        queues = [q for q in queues if position < len(q)]
        out.extend(q[position] for q in queues[: limit - len(out)])
        position += 1
    return out


def _image_problem(path: Path) -> str | None:
    """Why PIL cannot fully decode `path` (truncated files pass `verify()`), or None."""
    try:
        with Image.open(path) as image:
            image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        return str(error)
    return None


# -------------------------------------------------------------------------------------------- dataset


class ClassifiedImages(EpochAware, Dataset):
    """Items `{"pixel_values": FloatTensor[C, H, W], "labels": int}`; `targets[i]` is item i's class id.

    `augment` (the recipe's `data.augment`, training split only) runs before the image processor, seeded by
    (`seed`, the epoch given to `set_epoch`, the item's index): the same pixels on any rank and after a resume.
    `transform` (PIL image → PIL image) runs after it: a hook for code-level recipes. Subclasses provide
    `targets`, `classes` and `_load_image`.
    """

    targets: list[int]
    classes: list[str]

    def __init__(
        self, image_processor: Any, transform: ImageTransform | None, augment: Augment | None, seed: int
    ) -> None:
        self.image_processor, self.transform = image_processor, transform
        self.augment = augment if augment is not None and augment.active else None
        self.seed, self.epoch = seed, 0

    def __len__(self) -> int:
        return len(self.targets)

    @property
    def description(self) -> str:
        """Where the split comes from, for plot titles."""
        raise NotImplementedError

    def name_of(self, index: int) -> str:
        """Item `index`'s image, for the summary's examples."""
        raise NotImplementedError

    def _load_image(self, index: int) -> Image.Image:
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict[str, Any]:
        image = self._load_image(index)
        if self.augment is not None:
            image = augment(
                AugmentSample(image=image), self.augment, seed=self.seed, epoch=self.epoch, index=index
            ).sample.image
        if self.transform is not None:
            image = self.transform(image)
        pixel_values = self.image_processor(images=image, return_tensors="pt")["pixel_values"][0]
        return {"pixel_values": pixel_values, "labels": self.targets[index]}


class ImageClassificationDataset(ClassifiedImages):
    """An image folder (one subfolder per class) or a CSV / JSONL list of (image, label)."""

    def __init__(
        self,
        source: str | Path,
        key: str,
        classes: Sequence[str],
        image_processor: Any,
        on_bad_sample: str = "fail",
        images: str | Path | None = None,
        limit: int | None = None,
        transform: ImageTransform | None = None,
        augment: Augment | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(image_processor, transform, augment, seed)
        self.source = Path(source)
        self.key = key
        self.classes = list(classes)
        self.bad_samples = BadSamples(f"{source} ({key})", on_bad_sample)  # type: ignore[arg-type]
        samples = read_split(source, key, self.bad_samples, images)
        _check_labels(samples, self.classes, key, source)
        samples = self._usable(samples)
        if limit is not None:
            samples = _round_robin(samples, self.classes, limit)
        ensure_not_empty(len(samples), self.bad_samples, "images")
        self.samples = samples
        index = {name: i for i, name in enumerate(self.classes)}
        self.targets: list[int] = [index[s.label] for s in samples]
        self.bad_samples.log(len(samples))

    def _usable(self, samples: list[Sample]) -> list[Sample]:
        """Drop (skip) or stop on (fail) missing files; under "skip" also decode each image once."""
        kept: list[Sample] = []
        for s in samples:
            if not s.path.is_file():
                self.bad_samples.report(
                    "missing_image",
                    s.where,
                    f"image file {s.path} not found",
                    "Add the image or remove the line",
                )
            elif self.bad_samples.policy == "skip" and (problem := _image_problem(s.path)) is not None:
                self.bad_samples.report(
                    "corrupt_image",
                    s.where,
                    f"cannot read the image {s.path} ({problem})",
                    "Replace the file",
                )
            else:
                kept.append(s)
        return kept

    @property
    def description(self) -> str:
        return str(self.source)

    def name_of(self, index: int) -> str:
        return str(self.samples[index].path)

    def _load_image(self, index: int) -> Image.Image:
        sample = self.samples[index]
        try:
            with Image.open(sample.path) as image:
                return image.convert("RGB")
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
            raise DataError(
                f"{sample.where}: cannot read the image {sample.path} ({error}); it belongs to {self.key}. "
                'Replace or remove the file, or set the recipe\'s data on_bad_sample="skip" (which decodes '
                "every image before training and drops unreadable ones, counted in training_summary.json)."
            ) from error


class SourceClassificationDataset(ClassifiedImages):
    """A `datasets` source (`trainers.data.sources`) with an image and a label column (a ClassLabel id or a
    class name per row). Labels are read from the Arrow table up front; images are decoded per item."""

    def __init__(
        self,
        source: Any,
        key: str,
        classes: Sequence[str],
        image_processor: Any,
        limit: int | None = None,
        transform: ImageTransform | None = None,
        augment: Augment | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(image_processor, transform, augment, seed)
        self.source, self.key, self.classes = source, key, list(classes)
        labels = source_labels(source, key)
        index = {name: i for i, name in enumerate(self.classes)}
        unknown = sorted({label for label in labels if label not in index})
        if unknown:
            raise DataError(
                f"{key}: {source.mapper.source.path!r} has labels {_listed(unknown)} that are not among the classes "
                f"{_listed(self.classes)}. Fix the labels, or add them to data.labels / the train split."
            )
        order = list(range(len(labels)))
        if limit is not None:  # one per class in turn, as for the task's own files
            by_class: dict[str, list[int]] = {c: [] for c in self.classes}
            for i in order:
                by_class[labels[i]].append(i)
            turns = (
                rows[r]
                for r in range(max(map(len, by_class.values())))
                for rows in by_class.values()
                if r < len(rows)
            )
            order = list(turns)[:limit]
        self.rows = order
        self.targets = [index[labels[i]] for i in order]
        ensure_not_empty(len(order), BadSamples(key, "fail"), "images")

    @property
    def description(self) -> str:
        return f"{self.source.mapper.source.path} ({self.key})"

    def name_of(self, index: int) -> str:
        return f"row {self.rows[index]}"

    def _load_image(self, index: int) -> Image.Image:
        return self.source[self.rows[index]]["image"]


def source_labels(source: Any, key: str) -> list[str]:
    """Each row's class name: a ClassLabel id through its names (imagefolder's folder names), else the value."""
    from trainers.data.sources import column_values

    if "label" not in source.mapper.columns:
        raise DataError(f"{key}.columns.label is not set; a classification split needs its label column.")
    names = source.label_names
    return [names[v] if names is not None else str(v) for v in column_values(source, "label")]


def build_dataset(
    data: ClassificationData,
    source: str | DatasetSource,
    key: str,
    classes: Sequence[str],
    image_processor: Any,
    limit: int | None = None,
    transform: ImageTransform | None = None,
    augment: Augment | None = None,
    seed: int = 0,
) -> ClassifiedImages:
    if isinstance(source, DatasetSource):
        from trainers.data.sources import load_source

        return SourceClassificationDataset(
            load_source(source, key), key, classes, image_processor, limit, transform, augment, seed
        )
    return ImageClassificationDataset(
        source,
        key,
        classes,
        image_processor,
        data.on_bad_sample,
        data.images,
        limit,
        transform,
        augment,
        seed,
    )


@dataclass
class ClassificationCollator:
    """Stacks pixel values and labels: exactly what `*ForImageClassification.forward` takes."""

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return {
            "pixel_values": torch.stack([f["pixel_values"] for f in features]),
            "labels": torch.tensor([int(f["labels"]) for f in features], dtype=torch.long),
        }
