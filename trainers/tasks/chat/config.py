"""Recipe dataclasses of the chat task (no torch import: recipes load fast)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from trainers.data.source_config import DatasetSource
from trainers.data.split_config import DataPath, SplitDataWithPolicy
from trainers.errors import RecipeError

CHAT_METRICS = ("exact_match", "answer_f1", "rouge_l", "cider_d")


@dataclass
class ChatEval:
    """Evaluation by generation: the last assistant turn of each validation conversation is generated from the
    turns before it (greedy or beam search) and scored against the reference answer.

    `metrics`: any of exact_match (normalised: lower case, punctuation and articles dropped), answer_f1
    (SQuAD-style overlap of the normalised words), rouge_l and cider_d (pycocoevalcap); the first is the
    best-checkpoint metric unless early stopping names another. `scorer`: an optional `"module:function"`
    taking `(predictions, references)` (two lists of strings) and returning more metrics by name (e.g. a JSON
    field accuracy); `scorer_metrics` lists the names it returns, so recipes may watch them.
    """

    metrics: tuple[str, ...] = ("exact_match", "answer_f1")
    num_beams: int = 1
    max_new_tokens: int = 32
    batch_size: int | None = None
    scorer: str | None = None
    scorer_metrics: tuple[str, ...] = ()

    def validate(self) -> None:
        unknown = [m for m in self.metrics if m not in CHAT_METRICS]
        if unknown or not self.metrics:
            raise RecipeError(
                f"evaluation.metrics: {unknown or 'none'} — pick one or more of {', '.join(CHAT_METRICS)}."
            )
        if self.num_beams < 1 or self.max_new_tokens < 1:
            raise RecipeError("evaluation.num_beams and evaluation.max_new_tokens must be >= 1.")
        if self.scorer is not None and ":" not in self.scorer:
            raise RecipeError(
                f"evaluation.scorer={self.scorer!r} is not a 'module:function' path; e.g. "
                "'mypackage.scoring:json_field_accuracy'."
            )
        if self.scorer_metrics and self.scorer is None:
            raise RecipeError(
                "evaluation.scorer_metrics is set but evaluation.scorer is not: name the scorer."
            )


@dataclass
class ChatData(SplitDataWithPolicy):
    """Conversations as JSONL, one per line:
    `{"images": ["0001.png"], "messages": [{"role": "user", "content": "<image>How many circles?"},
    {"role": "assistant", "content": "3"}]}`.

    Roles are `system`, `user` and `assistant`; each `<image>` in a message (or a `{"type": "image"}` part
    of a list content, the Hugging Face form) takes the next of the line's `images` (`"image"` for one), in
    order, relative to `images` (default: the JSONL's folder). Training computes the loss on the assistant
    turns only (every one of them, with the template's end-of-turn token); evaluation generates the last one.
    `max_length` bounds a rendered conversation, image tokens included (the tokenizer's model limit applies
    too); a longer one is a bad sample naming its line. Qwen2-VL resizes each image to between its
    processor's `min_pixels` and `max_pixels` (the real processor's default max is 12845056 pixels, up to
    16384 image tokens): `max_pixels` caps it (e.g. 401408 = 512 tokens of 28 x 28 px).

    Either split may instead be a `DatasetSource` of conversations: `columns.messages` (the same list of
    {role, content} turns) and `columns.image` (one `Image`, a list of them, or file names relative to
    `image_dir`), checked as lines are; a problem names the split and row index.
    """

    task: ClassVar[str] = "chat"
    eval_config: ClassVar[type] = ChatEval
    data_paths: ClassVar[tuple[DataPath, ...]] = (
        DataPath("train", "JSONL"),
        DataPath("val", "JSONL"),
        DataPath("images", "image directory", "dir"),
        DataPath("val_images", "image directory", "dir"),
    )
    missing_hint: ClassVar[str] = (
        'Point data.train= and data.val= at JSONL files of {"images": [...], "messages": [...]} lines '
        "(or at DatasetSource(kind, path, columns=Columns(image=..., messages=...))). "
        "`--demo` trains on the shipped data/chat_shapes."
    )

    train: str | DatasetSource
    val: str | DatasetSource
    val_images: str | None = None
    max_length: int = 2048
    max_pixels: int | None = None

    def validate(self) -> None:
        super().validate()
        if self.max_length < 8:
            raise RecipeError(f"data.max_length={self.max_length} is too small; use at least 8 tokens.")
        if self.max_pixels is not None and self.max_pixels < 28 * 28:
            raise RecipeError(f"data.max_pixels={self.max_pixels} is below one 28 x 28 patch; raise it.")
