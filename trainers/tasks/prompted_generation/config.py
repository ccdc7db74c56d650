"""Recipe dataclasses of the Florence-2 task (no torch import: recipes load fast)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from trainers.data.source_config import DatasetSource
from trainers.data.split_config import DataPath, SplitDataWithPolicy
from trainers.errors import RecipeError

CAPTION_METRICS = ("rouge_l", "cider_d", "bleu_4", "meteor")


@dataclass
class PromptedEval:
    """Generation and scoring: beam search, `post_process_generation`, box mAP, grounding recall, region captions.

    `caption_metrics` score the descriptions of matched dense regions (the captioning task's scorer; METEOR
    starts a java process, so it is not on by default). `draw_images` val images are drawn per evaluation
    (`eval/boxes.png`: true boxes green, predicted red).
    """

    num_beams: int = 3
    max_new_tokens: int = 64
    batch_size: int | None = None
    caption_metrics: tuple[str, ...] = ("rouge_l", "cider_d")
    draw_images: int = 6

    def validate(self) -> None:
        unknown = [m for m in self.caption_metrics if m not in CAPTION_METRICS]
        if unknown:
            raise RecipeError(
                f"evaluation.caption_metrics: {unknown} are not among {', '.join(CAPTION_METRICS)}; "
                f"fix evaluation.caption_metrics."
            )
        if self.num_beams < 1 or self.max_new_tokens < 1:
            raise RecipeError("evaluation.num_beams and evaluation.max_new_tokens must be >= 1.")


@dataclass
class PromptedData(SplitDataWithPolicy):
    """Florence-2 JSONL: one `{"image", "prefix", "suffix"}` per line (`python -m trainers.tasks.prompted_generation.voc_to_jsonl`
    writes it from LabelImg VOC XML), image paths relative to `images` (default: the JSONL's folder; `val_images`
    for the val split).

    `order` is the training order: "curriculum" gives every epoch's OD lines first, then DENSE_REGION_CAPTION,
    then CAPTION_TO_PHRASE_GROUNDING (each block shuffled by seed and epoch); "shuffled" is the Trainer's
    random order. `max_length` bounds the prompt (image tokens + task prompt), `max_target_length` the suffix;
    a longer one is an error naming the line. `classes` fixes the OD class list (default: the train split's).

    Either split may instead be a `DatasetSource` of Florence-style rows: `columns.prefix` and
    `columns.suffix` (the task token with its caption, the target with `<loc_*>` bins), checked as lines are.
    """

    task: ClassVar[str] = "prompted-generation"
    eval_config: ClassVar[type] = PromptedEval
    data_paths: ClassVar[tuple[DataPath, ...]] = (
        DataPath("train", "JSONL"),
        DataPath("val", "JSONL"),
        DataPath("images", "image directory", "dir"),
        DataPath("val_images", "image directory", "dir"),
    )
    describing_fields: ClassVar[tuple[str, ...]] = ("classes",)
    missing_hint: ClassVar[str] = (
        "Convert LabelImg VOC XML with `python -m trainers.tasks.prompted_generation.voc_to_jsonl --voc DIR "
        "--images DIR --out train.jsonl` and point data.train=, data.val= (and data.images=) at the result. "
        "`--demo` trains on the shipped data/fabric."
    )

    train: str | DatasetSource
    val: str | DatasetSource
    val_images: str | None = None
    order: Literal["curriculum", "shuffled"] = "curriculum"
    max_length: int = 1024
    max_target_length: int = 1024
    classes: tuple[str, ...] | None = None

    def validate(self) -> None:
        if self.order not in ("curriculum", "shuffled"):
            raise RecipeError(f"data.order must be curriculum or shuffled, got {self.order!r}.")
