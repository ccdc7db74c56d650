"""Florence-2 JSONL → model inputs: the processor builds the prompt (task token → natural-language prompt, plus
the image tokens), a separate tokenizer call builds the labels, and the attention mask goes along.

Everything that can be checked without decoding images is checked at construction, each message naming the
file and line: a malformed line, an unknown task token, a suffix with `<loc_1000>` or a loc count that is not
a multiple of 4 (`trainers.tasks.prompted_generation.loc.parse_suffix`), a missing image, a prompt longer than
`data.max_length` (counted with the image tokens) or a suffix longer than `data.max_target_length`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset

from trainers.data import jsonl
from trainers.data.epoch import EpochAware
from trainers.data.images import ImageRef, open_rgb
from trainers.data.source_config import DatasetSource
from trainers.data_policy import BadSamples, DataError, ensure_not_empty
from trainers.tasks.prompted_generation.config import PromptedData
from trainers.tasks.prompted_generation.loc import TASK_TOKENS, Group, SuffixError, dequantize, parse_suffix

CURRICULUM = TASK_TOKENS  # OD -> DENSE_REGION_CAPTION -> CAPTION_TO_PHRASE_GROUNDING
_LINE_HINT = (
    'a line looks like {"image": "0001.jpg", "prefix": "<OD>", "suffix": '
    '"drop<loc_732><loc_481><loc_748><loc_501>"}'
)


@dataclass(frozen=True)
class Sample:
    """One JSONL line, checked: task token, caption (grounding), parsed target, image path and size."""

    where: str
    image: ImageRef  # a file, or a `datasets` row (`trainers.data.images.RowImage`)
    prefix: str
    suffix: str
    task: str
    groups: tuple[Group, ...]
    size: tuple[int, int]  # width, height

    def boxes(self) -> list[tuple[str, list[int]]]:
        """(label, pixel box) per target box, dequantized as the processor's post-processor does."""
        out = []
        for group in self.groups:
            for box in dequantize(group.bins, self.size):
                out.append((group.label, box))
        return out


def task_of(prefix: str) -> str | None:
    """The task token a prefix starts with (grounding: followed by its caption), or None."""
    return next((t for t in TASK_TOKENS if prefix.startswith(t)), None)


def _check_prefix(prefix: str) -> str:
    task = task_of(prefix)
    if task is None:
        raise ValueError(
            f"unknown task token in prefix {prefix[:60]!r}; this task trains {', '.join(TASK_TOKENS)}"
        )
    rest = prefix[len(task) :].strip()
    if task == "<CAPTION_TO_PHRASE_GROUNDING>" and not rest:
        raise ValueError(f"prefix {prefix!r} has no caption after {task} (the phrases to ground)")
    if task != "<CAPTION_TO_PHRASE_GROUNDING>" and rest:
        raise ValueError(f"prefix {prefix!r}: {task} takes no text after it")
    return task


def _target(where: str, prefix: str, suffix: str, bad: BadSamples) -> tuple[str, list[Group]] | None:
    """The task token and parsed suffix of one sample; None once a problem is reported."""
    try:
        task = _check_prefix(prefix)
    except ValueError as error:
        bad.report("unknown_task", where, f'key "prefix": {error}', "Fix the prefix")
        return None
    try:
        groups = parse_suffix(suffix)
    except SuffixError as error:
        bad.report(
            "bad_suffix",
            where,
            f'key "suffix": {error}',
            "Fix the suffix (python -m trainers.tasks.prompted_generation.voc_to_jsonl writes valid ones)",
        )
        return None
    return task, groups


def read_source(source: DatasetSource, key: str, bad: BadSamples, limit: int | None) -> list[Sample]:
    """The checked samples of a `datasets` source of Florence-style rows (image, prefix, suffix)."""
    from trainers.data.source_rows import load_map_source, require_columns, source_rows

    dataset = load_map_source(source, key)
    require_columns(
        dataset, key, ("prefix", "suffix"), "a prompted-generation set needs each row's prefix and suffix"
    )
    samples: list[Sample] = []
    for row in source_rows(dataset, key, ("prefix", "suffix"), bad, limit):
        prefix, suffix = row.values["prefix"], row.values["suffix"]
        if not (isinstance(prefix, str) and prefix and isinstance(suffix, str) and suffix):
            bad.report(
                "malformed_line",
                row.where,
                f"prefix {prefix!r} or suffix {suffix!r} is empty or not a string",
                f"Fix the row; {_LINE_HINT}",
            )
            continue
        checked = _target(row.where, prefix, suffix, bad)
        if checked is not None:
            samples.append(
                Sample(
                    row.where,
                    row.image,
                    prefix,
                    suffix,
                    checked[0],
                    tuple(checked[1]),
                    (row.width, row.height),
                )
            )
    return samples


def read_jsonl(path: Path, images: Path, bad: BadSamples) -> list[Sample]:
    """The checked samples of one JSONL file (image sizes read from the file headers)."""
    samples: list[Sample] = []
    for where, record in jsonl.records(path, bad, _LINE_HINT):
        fields = {
            k: record.get(k) if isinstance(record, dict) else None for k in ("image", "prefix", "suffix")
        }
        missing = [k for k, v in fields.items() if not isinstance(v, str) or not v]
        if missing:
            bad.report(
                "malformed_line",
                where,
                f"key(s) {', '.join(missing)} missing or not a string",
                f"Fix that line; {_LINE_HINT}",
            )
            continue
        checked = _target(where, fields["prefix"], fields["suffix"], bad)
        if checked is None:
            continue
        task, groups = checked
        image = Path(fields["image"]) if Path(fields["image"]).is_absolute() else images / fields["image"]
        if not image.is_file():
            bad.report(
                "missing_image",
                where,
                f'key "image": {image} not found',
                "Add the image, fix the path (relative to data.images) or remove the line",
            )
            continue
        try:
            with Image.open(image) as im:
                size = im.size
        except OSError as error:
            bad.report(
                "corrupt_image", where, f'key "image": cannot read {image} ({error})', "Replace the file"
            )
            continue
        samples.append(Sample(where, image, fields["prefix"], fields["suffix"], task, tuple(groups), size))
    return samples


class PromptedDataset(EpochAware, Dataset):
    """Items `{input_ids, attention_mask, pixel_values, labels, task, image_size}`, unpadded.

    `ordered` tells the trainer to read the items in index order (a sequential sampler): under
    `order="curriculum"` index i of epoch e is the i-th of that epoch's curriculum (OD lines, then dense
    region captions, then grounding, each block shuffled by (seed, epoch)).
    """

    def __init__(
        self,
        source: str | Path | DatasetSource,
        key: str,
        processor: Any,
        data: PromptedData,
        images: str | Path | None,
        limit: int | None = None,
        order: str = "shuffled",
        seed: int = 0,
    ) -> None:
        self.key = key
        self.processor = processor
        where = source.path if isinstance(source, DatasetSource) else source
        self.bad_samples = BadSamples(f"{where} ({key})", data.on_bad_sample)
        if isinstance(source, DatasetSource):
            samples = read_source(source, key, self.bad_samples, limit)
        else:
            path = Path(source)
            if not path.is_file():
                raise DataError(
                    f"{source}: not found ({key}). Point {key} at a Florence JSONL "
                    "(python -m trainers.tasks.prompted_generation.voc_to_jsonl writes one from VOC XML)."
                )
            root = Path(images) if images is not None else path.parent
            samples = read_jsonl(path, root, self.bad_samples)
        samples = [s for s in samples if self._fits(s, data)]
        if limit is not None:
            samples = samples[:limit]
        ensure_not_empty(len(samples), self.bad_samples, "lines")
        self.samples = samples
        self.bad_samples.log(len(samples))
        self.ordered = order == "curriculum"
        self.seed, self.epoch = seed, 0
        self._order_epoch = 0  # the epoch `_order` was drawn for (each worker redraws it when that moves on)
        self._order = self._curriculum(0) if self.ordered else list(range(len(samples)))

    def _fits(self, sample: Sample, data: PromptedData) -> bool:
        prompt = self.prompt_length(sample.prefix)
        if prompt > data.max_length:
            self.bad_samples.report(
                "too_long",
                sample.where,
                f'key "prefix": the prompt is {prompt} tokens ({self.processor.num_image_tokens} image tokens + '
                f"the task prompt), longer than data.max_length={data.max_length}",
                "Shorten the caption or raise data.max_length",
            )
            return False
        target = len(self.processor.tokenizer(sample.suffix)["input_ids"])
        if target > data.max_target_length:
            self.bad_samples.report(
                "too_long",
                sample.where,
                f'key "suffix": {target} tokens, longer than data.max_target_length={data.max_target_length}',
                "Split the image's boxes or raise data.max_target_length",
            )
            return False
        return True

    def prompt_length(self, prefix: str) -> int:
        tokenizer = self.processor.tokenizer
        prompt = self.processor._construct_prompts([prefix])[0]
        text = tokenizer.bos_token + prompt + tokenizer.eos_token
        return self.processor.num_image_tokens + len(tokenizer(text, add_special_tokens=False)["input_ids"])

    def _curriculum(self, epoch: int) -> list[int]:
        rng = random.Random(f"{self.seed}-{epoch}")
        order: list[int] = []
        for task in CURRICULUM:
            block = [i for i, s in enumerate(self.samples) if s.task == task]
            rng.shuffle(block)
            order += block
        return order

    def __len__(self) -> int:
        return len(self.samples)

    def sample(self, index: int) -> Sample:
        """The sample behind item `index` (evaluation sets are never reordered)."""
        if self.ordered and self._order_epoch != self.epoch:  # the shared epoch moved on (`set_epoch`)
            self._order_epoch = self.epoch
            self._order = self._curriculum(self._order_epoch)
        return self.samples[self._order[index]]

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.sample(index)
        rgb = open_rgb(sample.image)
        inputs = self.processor(text=[sample.prefix], images=[rgb], return_tensors="pt")
        labels = self.processor.tokenizer(sample.suffix, return_token_type_ids=False)["input_ids"]
        return {
            "input_ids": inputs["input_ids"][0],
            "attention_mask": inputs["attention_mask"][0],
            "pixel_values": inputs["pixel_values"][0],
            "labels": torch.tensor(labels, dtype=torch.long),
            "task": sample.task,
            "image_size": sample.size,
        }


def _pad(rows: Sequence[torch.Tensor], value: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


@dataclass
class PromptedCollator:
    """Right-pads prompts (pad id, mask 0) and labels (-100, ignored by the loss); `with_meta` adds the task and
    image size of each item (for `predict`; the model's forward must not see them)."""

    pad_token_id: int
    with_meta: bool = False

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, Any]:
        batch: dict[str, Any] = {
            "input_ids": _pad([f["input_ids"] for f in features], self.pad_token_id),
            "attention_mask": _pad([f["attention_mask"] for f in features], 0),
            "pixel_values": torch.stack([f["pixel_values"] for f in features]),
            "labels": _pad([f["labels"] for f in features], -100),
        }
        if self.with_meta:
            batch.pop("labels")
            batch["tasks"] = [f["task"] for f in features]
            batch["image_sizes"] = [tuple(f["image_size"]) for f in features]
        return batch
