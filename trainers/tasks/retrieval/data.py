"""Caption files → datasets of (image, captions), and the collators that tokenize captions for the dual encoder.

A caption file is a JSON object `{image file: [caption, ...]}`, or a COCO captions file (`captions_*.json`,
`images` + `annotations`; `trainers.data.coco_captions`). A missing image or an empty caption list stops
with the file, the line of that entry and what to do (line numbers are found in the text: JSON parsers give
none).
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import UnidentifiedImageError
from torch.utils.data import Dataset

from trainers.data.coco_captions import is_coco_captions, read_coco_captions
from trainers.data.epoch import EpochAware
from trainers.data.images import ImageRef, open_rgb
from trainers.data.source_config import DatasetSource
from trainers.data_policy import BadSamples, DataError
from trainers.text_files import read_utf8


@dataclass(frozen=True)
class Pair:
    """One image and all of its captions; `where` is `file:line` of its entry."""

    path: ImageRef  # a file, or a `datasets` row (`trainers.data.images.RowImage`)
    captions: tuple[str, ...]
    where: str


def _line_of(text: str, key: str) -> int:
    position = text.find(json.dumps(key))
    return text.count("\n", 0, position) + 1 if position >= 0 else 1


def read_source_pairs(source: DatasetSource, key: str, limit: int | None = None) -> list[Pair]:
    """The rows of a `datasets` source (an image and a caption or a list of captions each), in table order."""
    from trainers.data.source_rows import load_map_source, require_columns, source_rows

    dataset = load_map_source(source, key)
    require_columns(dataset, key, ("caption",), "an image-text set needs each image's caption(s)")
    pairs = []
    for row in source_rows(dataset, key, ("caption",), BadSamples(f"{source.path} ({key})"), limit):
        value = row.values["caption"]
        captions = [value] if isinstance(value, str) else value
        if (
            not isinstance(captions, list)
            or not captions
            or not all(isinstance(c, str) and c.strip() for c in captions)
        ):
            raise DataError(
                f"{row.where}: caption {value!r} is not a non-empty caption or list of them. Fix the row or map "
                f"{key}.columns.caption to another column."
            )
        pairs.append(Pair(row.image, tuple(c.strip() for c in captions), row.where))
    if not pairs:
        raise DataError(f"{key} ({source.path!r}) holds no rows.")
    return pairs


def read_pairs(
    source: str | Path | DatasetSource, key: str, images: str | Path | None = None, limit: int | None = None
) -> list[Pair]:
    """The caption file's entries in file order (the first `limit`), each image checked on disk; a
    `DatasetSource` gives its rows instead."""
    if isinstance(source, DatasetSource):
        return read_source_pairs(source, key, limit)
    source = Path(source)
    text = read_utf8(source, DataError, key)
    try:
        entries = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{source}:{exc.lineno}: {key} is not valid JSON ({exc.msg}). A caption file is one "
            'object {"image.png": ["a caption", "another caption"], ...}.'
        ) from None
    if not isinstance(entries, dict):
        raise DataError(
            f"{source}:1: {key} must be a JSON object mapping image files to caption lists, "
            f"got a {type(entries).__name__}."
        )
    if is_coco_captions(entries):  # captions_*.json: images + annotations
        found, lines = read_coco_captions(source, BadSamples(f"{source} ({key})"))
        entries = found
    else:
        lines = {name: f"{source}:{_line_of(text, name)}" for name in entries}
    folder = Path(images) if images is not None else source.parent
    pairs = []
    for name, captions in list(entries.items())[:limit]:
        where = lines[name]
        captions = [captions] if isinstance(captions, str) else captions
        if (
            not isinstance(captions, list)
            or not captions
            or not all(isinstance(c, str) and c.strip() for c in captions)
        ):
            raise DataError(
                f"{where}: {name!r} in {key} needs a non-empty list of non-empty captions. Fix the entry "
                "or remove it."
            )
        path = folder / name
        if not path.is_file():
            raise DataError(
                f"{where}: {key} names the image {name!r}, but {path} does not exist. Add the image, "
                f"fix the name, or point data.images at the folder that holds it."
            )
        pairs.append(Pair(path, tuple(c.strip() for c in captions), where))
    if not pairs:
        raise DataError(f"{source}:1: {key} holds no caption-image pairs.")
    return pairs


class PairDataset(EpochAware, Dataset):
    """`{"pixel_values", "captions"}` per image; with `train=True` one caption, drawn per (seed, epoch, index)."""

    def __init__(
        self, pairs: Sequence[Pair], image_processor: Any, key: str, train: bool = False, seed: int = 0
    ):
        self.pairs = list(pairs)
        self.image_processor = image_processor
        self.key = key
        self.train = train
        self.seed, self.epoch = seed, 0

    def __len__(self) -> int:
        return len(self.pairs)

    def caption_for(self, index: int) -> str:
        captions = self.pairs[index].captions
        return captions[random.Random(f"{self.seed}-{self.epoch}-{index}").randrange(len(captions))]

    def __getitem__(self, index: int) -> dict[str, Any]:
        pair = self.pairs[index]
        try:
            image = open_rgb(pair.path)
        except (UnidentifiedImageError, OSError) as error:
            raise DataError(
                f"{pair.where}: cannot read the image {pair.path} ({error}) of {self.key}. "
                "Replace the file or remove its entry."
            ) from error
        pixel_values = self.image_processor(images=image, return_tensors="pt")["pixel_values"][0]
        captions = [self.caption_for(index)] if self.train else list(pair.captions)
        return {"pixel_values": pixel_values, "captions": captions}


@dataclass
class PairCollator:
    """Images stacked; every caption of the batch tokenized (padded to the longest, cut at `max_length`).

    `caption_counts[i]` is how many captions item i brought (1 in training): `predict` splits the text
    embeddings back per image with it. `return_loss=True` is what makes the Trainer compute an eval loss for a
    CLIP-style model (its label name); the task's loss hook does not pass it to the model.
    """

    tokenizer: Any
    max_length: int

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, Any]:
        captions = [c for f in features for c in f["captions"]]
        tokens = self.tokenizer(
            captions, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        batch = {
            "pixel_values": torch.stack([f["pixel_values"] for f in features]),
            "input_ids": tokens["input_ids"],
            "attention_mask": tokens["attention_mask"],
            "caption_counts": torch.tensor([len(f["captions"]) for f in features], dtype=torch.long),
            "return_loss": True,
        }
        if "token_type_ids" in tokens:
            batch["token_type_ids"] = tokens["token_type_ids"]
        return batch
