"""Caption data: a `{file name: caption}` JSON (or JSONL, or a COCO `captions_*.json`) plus an image folder, and
the collator that makes BLIP batches.

The dataset validates everything it can at construction (JSON syntax, schema, every image present) so that a
typo fails in the first second of a run, not an hour in on the first batch that touches the bad entry.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from trainers.data import jsonl
from trainers.data.augment import Augment, augment
from trainers.data.augment import Sample as AugmentSample
from trainers.data.coco_captions import is_coco_captions, read_coco_captions
from trainers.data.epoch import EpochAware
from trainers.data_policy import BadSamples, DataError, ensure_not_empty
from trainers.text_files import read_utf8

_SCHEMA_HINT = 'it must be a JSON object mapping image file names to a caption or a list of captions, e.g. {"0001.png": "a red circle above a blue square"}'
_MAX_LISTED = 5


__all__ = [
    "CaptionCollator",
    "CaptionDataset",
    "CaptionJsonDataset",
    "CaptionSourceDataset",
    "DataError",
    "parse_captions",
]
_JSONL_HINT = 'each line must be a JSON object like {"image": "0001.png", "caption": "a red circle"} ("caption" may be a list)'


def _listed(items: Sequence[str]) -> str:
    shown = ", ".join(repr(item) for item in items[:_MAX_LISTED])
    more = len(items) - _MAX_LISTED
    return shown + (f" and {more} more" if more > 0 else "")


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise DataError(
            f"{path}: caption file not found. Check the captions path in the recipe; {_SCHEMA_HINT}."
        )
    text = read_utf8(path, DataError)
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(
            f"{path}: not valid JSON: {error.msg} at line {error.lineno} column {error.colno} (char {error.pos}). "
            f"Fix the syntax there; {_SCHEMA_HINT}."
        ) from error


def _as_captions(value: Any) -> list[str] | None:
    """The captions in one JSON value, or None when the value is not a caption or a non-empty caption list."""
    captions = [value] if isinstance(value, str) else value
    if not isinstance(captions, list) or not captions:
        return None
    if not all(isinstance(c, str) and c.strip() for c in captions):
        return None
    return captions


def _read_jsonl(path: Path, bad: BadSamples) -> dict[str, list[str]]:
    """`{"image": ..., "caption": ...}` per line; a malformed line fails or is skipped by the policy."""
    if not path.is_file():
        raise DataError(
            f"{path}: caption file not found. Check the captions path in the recipe; {_JSONL_HINT}."
        )
    out: dict[str, list[str]] = {}
    for where, record in jsonl.records(path, bad, _JSONL_HINT):
        image = record.get("image") if isinstance(record, dict) else None
        captions = _as_captions(record.get("caption")) if isinstance(record, dict) else None
        if not isinstance(image, str) or not image or captions is None:
            bad.report(
                "bad_entry",
                where,
                'no usable "image" name and non-blank "caption"',
                f"Fix that line; {_JSONL_HINT}",
            )
            continue
        if image in out:
            bad.report("duplicate", where, f"image {image!r} is listed twice", "Keep one line per image")
            continue
        out[image] = captions
    return out


def parse_captions(path: Path, bad: BadSamples | None = None) -> dict[str, list[str]]:
    """Read and validate a caption JSON (or JSONL); every entry comes back as a non-empty list of captions.

    With a "skip" policy, unusable entries are dropped and counted in `bad` instead of failing.
    """
    bad = bad or BadSamples(str(path))
    if path.suffix == ".jsonl":
        parsed_lines = _read_jsonl(path, bad)
        ensure_not_empty(len(parsed_lines), bad, "caption lines")
        return parsed_lines
    data = _read_json(path)
    if is_coco_captions(data):  # captions_*.json: images + annotations, checked with file:line
        coco, _lines = read_coco_captions(path, bad)
        ensure_not_empty(len(coco), bad, "caption entries")
        return coco
    if not isinstance(data, dict):
        raise DataError(
            f"{path}: the top level is a JSON {type(data).__name__}, not an object; {_SCHEMA_HINT}."
        )
    if not data:
        raise DataError(f"{path}: the caption mapping is empty; add at least one entry; {_SCHEMA_HINT}.")
    parsed = {name: _as_captions(value) for name, value in data.items()}
    unusable = [name for name, captions in parsed.items() if captions is None]
    if unusable and bad.policy == "skip":
        for name in unusable:
            bad.report("bad_entry", f"{path} entry {name!r}", "no usable caption", "Fix the value")
        ensure_not_empty(len(parsed) - len(unusable), bad, "caption entries")
    elif unusable:
        raise DataError(
            f"{path}: {len(unusable)} entr{'y has' if len(unusable) == 1 else 'ies have'} no usable caption "
            f"(not a non-blank string or a non-empty list of them): {_listed(unusable)}. Fix those values "
            f'(or set the recipe\'s data on_bad_sample="skip" to drop them); {_SCHEMA_HINT}.'
        )
    return {name: captions for name, captions in parsed.items() if captions is not None}


def _check_images(
    captions_json: Path, image_dir: Path, names: Sequence[str], bad: BadSamples | None = None
) -> list[str]:
    """The names whose image exists (and, under the "skip" policy, decodes); raises or records the rest."""
    if not image_dir.is_dir():
        raise DataError(
            f"{image_dir}: image directory not found (named by {captions_json}). Check the image directory in the recipe."
        )
    missing = [name for name in names if not (image_dir / name).is_file()]
    if bad is not None and bad.policy == "skip":
        kept = []
        for name in names:
            if name in missing:
                bad.report("missing_image", str(image_dir / name), "image file not found", "Add the image")
            elif (problem := _image_problem(image_dir / name)) is not None:
                bad.report(
                    "corrupt_image",
                    str(image_dir / name),
                    f"cannot read the image ({problem})",
                    "Replace the file",
                )
            else:
                kept.append(name)
        return kept
    if missing:
        raise DataError(
            f"{captions_json}: {len(missing)} of {len(names)} image files listed there are missing from {image_dir}: "
            f"{_listed(missing)}. Add the images or remove those entries, or set the recipe's data "
            'on_bad_sample="skip" to drop them and count them in training_summary.json.'
        )
    return list(names)


def _image_problem(path: Path) -> str | None:
    """Why PIL cannot decode `path` (a full decode: truncated files pass `verify()`), or None."""
    try:
        with Image.open(path) as image:
            image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        return str(error)
    return None


class CaptionDataset(EpochAware, Dataset):
    """Images with one or more captions each; the first caption trains, all are references.

    Items are `{"pixel_values": FloatTensor[C, H, W], "caption": str, "index": int}`. `augment` (training split
    only) runs before the image processor, seeded by (`seed`, the epoch given to `set_epoch`, the index); a flip
    swaps left and right in the caption. Subclasses provide `filenames`, `_captions` and `_load_image`.
    """

    filenames: list[str]
    _captions: list[list[str]]

    def __init__(self, image_processor: Any, augment: Augment | None = None, seed: int = 0) -> None:
        self.image_processor = image_processor
        self.augment = augment if augment is not None and augment.active else None
        self.seed, self.epoch = seed, 0

    def __len__(self) -> int:
        return len(self.filenames)

    @property
    def references(self) -> list[list[str]]:
        """All captions of every item, in item order (what caption metrics compare against)."""
        return [list(captions) for captions in self._captions]

    def _load_image(self, index: int) -> Image.Image:
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, caption = self._load_image(index), self._captions[index][0]
        if self.augment is not None:  # the caption moves with the image: a flip swaps left and right
            out = augment(
                AugmentSample(image=image, caption=caption),
                self.augment,
                seed=self.seed,
                epoch=self.epoch,
                index=index,
            ).sample
            image, caption = out.image, out.caption
        pixel_values = self.image_processor(images=image, return_tensors="pt")["pixel_values"][0]
        return {"pixel_values": pixel_values, "caption": caption, "index": index}


class CaptionJsonDataset(CaptionDataset):
    """Images from `image_dir` with captions from a JSON / JSONL file. Images are opened lazily, so
    construction costs one `stat` per file, not a decode. `limit` keeps the first usable items only."""

    def __init__(
        self,
        captions_json: Path,
        image_dir: Path,
        image_processor: Any,
        on_bad_sample: str = "fail",
        limit: int | None = None,
        augment: Augment | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(image_processor, augment, seed)
        self.captions_json = Path(captions_json)
        self.image_dir = Path(image_dir)
        self.bad_samples = BadSamples(str(self.captions_json), on_bad_sample)  # type: ignore[arg-type]
        captions = parse_captions(self.captions_json, self.bad_samples)
        kept = _check_images(self.captions_json, self.image_dir, list(captions), self.bad_samples)
        kept = kept[:limit] if limit is not None else kept
        ensure_not_empty(len(kept), self.bad_samples, "samples")
        self.filenames = kept
        self._captions = [captions[name] for name in kept]
        self.bad_samples.log(len(kept))

    def _load_image(self, index: int) -> Image.Image:
        path = self.image_dir / self.filenames[index]
        try:
            with Image.open(path) as image:
                return image.convert("RGB")
        except (UnidentifiedImageError, OSError) as error:
            raise DataError(
                f"{path}: cannot read the image ({error}); it is listed in {self.captions_json}. "
                'Replace the file or remove its entry, or set the recipe\'s data on_bad_sample="skip" '
                "(which checks every image before training and drops unreadable ones)."
            ) from error


class CaptionSourceDataset(CaptionDataset):
    """A `datasets` source (`trainers.data.sources`) with an image and a caption column (a string or a list
    of strings per row). The captions are read from the Arrow table up front; images are decoded per item."""

    def __init__(
        self,
        source: Any,
        key: str,
        image_processor: Any,
        limit: int | None = None,
        augment: Augment | None = None,
        seed: int = 0,
    ) -> None:
        from trainers.data.sources import column_values

        super().__init__(image_processor, augment, seed)
        if "caption" not in source.mapper.columns:
            raise DataError(f"{key}.columns.caption is not set; a caption set needs its caption column.")
        captions = []
        for row, value in enumerate(column_values(source, "caption")):
            listed = _as_captions(value)
            if listed is None:
                raise DataError(
                    f"{key}: row {row} of {source.mapper.source.path!r} has caption {value!r}; each row needs a "
                    "non-empty caption or a list of them (fix the data or map columns.caption to another column)."
                )
            captions.append(listed)
        count = len(captions) if limit is None else min(limit, len(captions))
        self.source = source
        self.filenames = [f"row {i}" for i in range(count)]
        self._captions = captions[:count]

    def _load_image(self, index: int) -> Image.Image:
        return self.source[index]["image"]


@dataclass
class CaptionCollator:
    """Batch captioning items the way BLIP's decoder is trained.

    The tokenizer puts [CLS] first; BLIP's `generate` starts from the bos token ([DEC]), so position 0 is
    replaced by bos to train the same start. Labels are the input ids with padding set to -100; the model
    shifts them by one itself, so they are not shifted here.
    """

    tokenizer: Any
    max_length: int = 60
    bos_token_id: int | None = None
    include_index: bool = False

    def __post_init__(self) -> None:
        if self.bos_token_id is None:
            self.bos_token_id = getattr(self.tokenizer, "bos_token_id", None)
        if self.bos_token_id is None:
            raise ValueError(
                "CaptionCollator needs a bos token id: the tokenizer has no bos_token (BLIP uses '[DEC]'); "
                "pass bos_token_id= or use the model's processor tokenizer."
            )
        if self.max_length < 2:
            raise ValueError(f"max_length must be >= 2 (bos plus at least one token), got {self.max_length}")

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        encoded = self.tokenizer(
            [feature["caption"] for feature in features],
            padding="longest",
            truncation=True,
            max_length=self.max_length,
            return_attention_mask=True,
            return_token_type_ids=False,
            return_tensors="pt",
        )
        input_ids = encoded["input_ids"].clone()
        attention_mask = encoded["attention_mask"]
        input_ids[:, 0] = self.bos_token_id
        labels = input_ids.masked_fill(attention_mask == 0, -100)
        batch = {
            "pixel_values": torch.stack([feature["pixel_values"] for feature in features]),
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": labels,
        }
        if self.include_index:
            batch["index"] = torch.tensor([int(feature["index"]) for feature in features], dtype=torch.long)
        return batch
