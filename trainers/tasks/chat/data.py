"""Chat JSONL (or a `datasets` source of conversations) → datasets of encoded conversations, checked at construction.

Every conversation is encoded once when the split is built (images included) so that one the model cannot
take — longer than `data.max_length` or the tokenizer's model limit, a template the processor rejects — is
reported with its line before training starts, not in the middle of an epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from trainers.data.images import open_rgb
from trainers.data.source_config import DatasetSource
from trainers.data_policy import BadSamples, DataError, ensure_not_empty
from trainers.tasks.chat.config import ChatData
from trainers.tasks.chat.conversations import Conversation, read_conversations
from trainers.tasks.chat.encode import EncodeError, collate, encode_prompt, encode_training
from trainers.tasks.chat.source import read_source_conversations

# A tokenizer without a stated limit reports a huge number (`VERY_LARGE_INTEGER`); above this it is no limit.
_NO_LIMIT = 10**8


def token_limit(processor: Any, data: ChatData) -> tuple[int, str]:
    """The longest conversation allowed and where that limit comes from."""
    model = getattr(processor.tokenizer, "model_max_length", None) or _NO_LIMIT
    if model < data.max_length:
        return int(model), f"the tokenizer's model_max_length={model}"
    return data.max_length, f"data.max_length={data.max_length}"


# The key of an evaluation item's generation inputs (the prompt before the last answer).
PROMPT = "prompt"


class ChatDataset(Dataset):
    """Training items (the whole conversation, labels on the assistant spans). With `evaluation=True` each
    item also holds, under `PROMPT`, the inputs that generate its last answer: the Trainer's collator computes
    the eval loss on the assistant tokens from the first, the generation collator batches the second;
    `references` holds the answers."""

    def __init__(
        self,
        source: str | Path | DatasetSource,
        key: str,
        processor: Any,
        data: ChatData,
        images: str | Path | None,
        limit: int | None = None,
        evaluation: bool = False,
    ) -> None:
        self.key, self.processor, self.evaluation = key, processor, evaluation
        if isinstance(source, DatasetSource):
            self.bad_samples = BadSamples(f"{source.path} ({key})", data.on_bad_sample)
            found = read_source_conversations(source, key, self.bad_samples, limit)
        else:
            path = Path(source)
            if not path.is_file():
                raise DataError(f"{path}: not found ({key}). {ChatData.missing_hint}")
            self.bad_samples = BadSamples(f"{path} ({key})", data.on_bad_sample)
            found = read_conversations(
                path, Path(images) if images is not None else path.parent, self.bad_samples
            )
        if limit is not None:
            found = found[:limit]
        self.limit, self.limit_from = token_limit(processor, data)
        self.samples: list[Conversation] = [c for c in found if self._fits(c)]
        ensure_not_empty(len(self.samples), self.bad_samples, "conversations")
        self.bad_samples.log(len(self.samples))

    def _encode(self, conversation: Conversation) -> dict[str, Any]:
        images = [open_rgb(p) for p in conversation.images]
        item = encode_training(self.processor, conversation, images)
        if self.evaluation:
            item[PROMPT] = encode_prompt(self.processor, conversation, images)
        return item

    def _fits(self, conversation: Conversation) -> bool:
        try:
            encoded = encode_training(
                self.processor, conversation, [open_rgb(p) for p in conversation.images]
            )
        except EncodeError as error:
            self.bad_samples.report(error.reason, conversation.where, error.message, error.fix)
            return False
        length = int(encoded["input_ids"].shape[-1])
        if length > self.limit:
            self.bad_samples.report(
                "too_long",
                conversation.where,
                f"the conversation is {length} tokens with its image tokens, longer than {self.limit_from}",
                "Shorten it, split it into several lines, lower the image resolution or raise data.max_length",
            )
            return False
        return True

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self._encode(self.samples[index])

    @property
    def references(self) -> list[str]:
        return [c.answer for c in self.samples]


@dataclass
class ChatCollator:
    """Training and eval-loss batches (right-padded, labels -100 on padding; an item's `PROMPT` is left out)
    or generation batches (the items' `PROMPT` inputs, left-padded so new tokens follow every prompt)."""

    pad_token_id: int
    generation: bool = False

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        if not self.generation:
            return collate(items, self.pad_token_id, left=False)
        batch = collate([item[PROMPT] for item in items], self.pad_token_id, left=True)
        batch.pop("labels", None)
        return batch
