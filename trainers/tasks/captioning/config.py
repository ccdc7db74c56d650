"""Recipe dataclasses of the captioning task (no torch import: recipes load fast).

`CaptionData` names its task (`task = "captioning"`) and its evaluation config (`CaptionEval`), so a recipe
with caption data gets captioning's evaluation defaults and metric checks without naming the task twice.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from trainers.data.source_config import DatasetSource
from trainers.data.split_config import AugmentableSplitData
from trainers.errors import RecipeError

SUPPORTED_METRICS: tuple[str, ...] = ("meteor", "rouge_l", "cider_d", "bleu_4")


@dataclass
class CaptionEval:
    """Batched generation settings and the caption metrics scored (the seed's beam-search settings);
    `plot_images`: how many val images `eval/captions.png` shows with their predicted and reference captions
    after each evaluation (0: no picture)."""

    metrics: tuple[str, ...] = ("meteor", "rouge_l", "cider_d")
    num_beams: int = 5
    no_repeat_ngram_size: int = 2
    repetition_penalty: float = 1.1
    length_penalty: float = 1.0
    max_length: int = 60
    batch_size: int | None = None
    plot_images: int = 8

    def validate(self) -> None:
        """`evaluation.metrics` must name caption metrics this task computes."""
        import difflib

        listed = ", ".join(SUPPORTED_METRICS)
        metrics = tuple(self.metrics or ())
        if not metrics:
            raise RecipeError(
                f"evaluation.metrics is empty; name at least one of {listed} "
                f"(e.g. evaluation.metrics={SUPPORTED_METRICS[0]})."
            )

        def closest(name: str) -> str | None:
            close = difflib.get_close_matches(name, SUPPORTED_METRICS, n=1, cutoff=0.5)
            return close[0] if close else None

        for name in metrics:
            if name in SUPPORTED_METRICS:
                continue
            fixed = [n if n in SUPPORTED_METRICS else closest(n) or n for n in metrics]
            example = ",".join(n for n in fixed if n in SUPPORTED_METRICS) or SUPPORTED_METRICS[0]
            hint = f" (did you mean {closest(name)!r}?)" if closest(name) else ""
            raise RecipeError(
                f"evaluation.metrics: {name!r} is not a metric this task computes{hint}; supported: {listed}. "
                f"Fix evaluation.metrics in the recipe or override it, e.g. evaluation.metrics={example}."
            )


# The name recipes use for captioning's evaluation settings.
Evaluation = CaptionEval


@dataclass
class CaptionSplit:
    """A further caption set (an extra validation set or the test split): its caption file and image folder."""

    captions: str | DatasetSource
    images: str | None = None


@dataclass
class CaptionData(AugmentableSplitData):
    """Captioning data: `{filename: caption}` JSON files and the folder holding the images.

    `extra_val` names further validation sets, each evaluated at every evaluation with its name as the metric
    prefix (`coco_meteor`: is general captioning kept while fine-tuning on screenshots?); `test` is evaluated
    once, at the end, with the best model. `augment` (`trainers.data.augment.Augment`) applies to the training
    split only, seeded by (training.seed, epoch, index); a horizontal flip swaps `left` and `right` in the
    caption (`caption_sides="swap"`) or leaves samples whose caption names a side unflipped ("no_flip").
    Any split (train, val, an extra set's or the test split's captions) may instead be a `DatasetSource`: a
    `datasets` dataset saved to disk, on the Hub, or an imagefolder / JSON / CSV directory, with its image and
    caption columns mapped (`columns=Columns(image="img", caption="text")`); `images` is then not needed.
    """

    task: ClassVar[str] = "captioning"
    eval_config: ClassVar[type] = CaptionEval

    train: str | DatasetSource
    val: str | DatasetSource
    test: CaptionSplit | None = None
    val_images: str | None = None
    extra_val: dict[str, CaptionSplit] = field(default_factory=dict)
    max_length: int = 60

    def file_splits(self) -> list[tuple[str, str, str | None]]:
        """(recipe key, caption file, image directory) of every split given as the task's own files."""
        splits = [
            ("data.train", self.train, self.images),
            ("data.val", self.val, self.val_images or self.images),
        ]
        splits += [(key, split.captions, split.images) for key, split in self.further_splits()]
        return [
            (key, captions, images)
            for key, captions, images in splits
            if not isinstance(captions, DatasetSource)
        ]

    def source_splits(self) -> list[tuple[str, DatasetSource]]:
        """(recipe key, source) of every split given as a `datasets` source."""
        splits = [("data.train", self.train), ("data.val", self.val)]
        splits += [(f"{key}.captions", split.captions) for key, split in self.further_splits()]
        return [(key, source) for key, source in splits if isinstance(source, DatasetSource)]

    def validate(self) -> None:
        for name, split in self.extra_val.items():
            if not isinstance(split, CaptionSplit):
                raise RecipeError(
                    f"data.extra_val[{name!r}] must be a CaptionSplit(captions=..., images=...), got "
                    f"{type(split).__name__}."
                )
        if self.test is not None and not isinstance(self.test, CaptionSplit):
            raise RecipeError(
                f"data.test must be a CaptionSplit(captions=..., images=...), got {type(self.test).__name__}."
            )
        super().validate()
        for key, source in self.source_splits():
            if source.streaming:
                raise RecipeError(
                    f"{key}.streaming=True: caption sets are map-style (an epoch needs their length, the evaluator "
                    f"its indices); set {key}.streaming=False (rows stay memory-mapped and images are decoded one "
                    "at a time, so nothing is loaded into memory up front)."
                )
        for key, _captions, images in self.file_splits():
            if images is None:
                where = "data.images" if key in ("data.train", "data.val") else f"{key}.images"
                raise RecipeError(
                    f"{key} is a caption file, so {where} must name the folder holding its images "
                    f"(or make {key} a DatasetSource with an image column)."
                )

    def further_splits(self) -> list[tuple[str, CaptionSplit]]:
        """(recipe key, split) of the extra validation sets and the test split."""
        splits = [(f"data.extra_val[{name!r}]", split) for name, split in self.extra_val.items()]
        return splits + ([("data.test", self.test)] if self.test is not None else [])

    def missing_paths(self) -> list[str]:
        """`key 'path' (what)` for each data path that does not exist: the `datasets` sources first, then the
        caption files and image folders of every split (each further split names its own pair)."""
        missing = [m for key, source in self.source_splits() if (m := source.missing_path(key)) is not None]
        wanted = [
            (key, path, "caption file")
            for key, path in (("data.train", self.train), ("data.val", self.val))
            if not isinstance(path, DatasetSource)
        ]
        if self.images:
            wanted.append(("data.images", self.images, "image directory"))
        if self.val_images:
            wanted.append(("data.val_images", self.val_images, "image directory"))
        for key, split in self.further_splits():
            if not isinstance(split.captions, DatasetSource):
                wanted += [
                    (f"{key}.captions", split.captions, "caption file"),
                    (f"{key}.images", split.images or "", "image directory"),
                ]
        for key, path, what in wanted:
            exists = Path(path).is_dir() if what == "image directory" else Path(path).is_file()
            if not exists:
                missing.append(f"{key} {path!r} ({what})")
        return missing

    def missing_message(self, missing: list[str], model_note: str) -> str:
        relative = any(not os.path.isabs(p) for p in (self.train, self.val, self.images))
        where = f" (relative paths are read from {os.getcwd()})" if relative else ""
        return (
            f"Data not found{where}: {'; '.join(missing)}.{model_note} Fix the captions path and the image "
            f"directory: {self.train} and {self.val} each map image file names to a caption or a list of captions, "
            'as a JSON object such as {"0001.jpg": "a dog runs along the beach"} or as JSONL, one '
            '{"image": "0001.jpg", "caption": "a dog runs along the beach"} per line; the images go in '
            f"{self.images}/. Put your files there or point data.train=, data.val= and data.images= at them. "
            "`--demo` trains a tiny model offline on the shipped sample set (data/shapes)."
        )
