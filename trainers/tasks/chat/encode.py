"""A conversation → model inputs, through the model's own processor and chat template; labels on assistant tokens.

The assistant spans are found without knowing the template: for the i-th assistant turn, the conversation up
to it rendered with the generation prompt is where the answer starts, the conversation through it is where the
answer ends (its end-of-turn token included, so the model learns to stop). Each prefix is encoded by the
processor with the images it holds, so image tokens expand exactly as in the full sequence; the full ids must
start with each prefix's ids, else the template is not prefix-stable and the error says so.

A processor without a chat template (PaliGemma) takes one user turn as the prefix and the answer as the
`suffix`: its processor builds the prompt (`<image>` tokens, `<bos>`, prefix, newline) and masks the labels
itself; longer conversations are a bad sample for such a model.
"""

from __future__ import annotations

from typing import Any

import torch
from PIL import Image

from trainers.tasks.chat.conversations import Conversation, Turn

SEQUENCE_KEYS = ("input_ids", "attention_mask", "labels")


class EncodeError(ValueError):
    """A conversation the model's processor cannot take (reported to the bad-sample policy with its line)."""

    def __init__(self, reason: str, message: str, fix: str) -> None:
        super().__init__(message)
        self.reason, self.message, self.fix = reason, message, fix


def has_template(processor: Any) -> bool:
    return bool(getattr(processor, "chat_template", None))


def _render(processor: Any, turns: list[Turn], generation_prompt: bool) -> str:
    return processor.apply_chat_template(
        [t.hf() for t in turns], tokenize=False, add_generation_prompt=generation_prompt
    )


def _process(processor: Any, text: str, images: list[Image.Image], **kwargs: Any) -> dict[str, torch.Tensor]:
    inputs = processor(text=[text], images=[images] if images else None, return_tensors="pt", **kwargs)
    return dict(inputs)


def _suffix_pair(conversation: Conversation, turns: tuple[Turn, ...]) -> tuple[str, str | None]:
    """(prefix, suffix) for a processor without a chat template: one user turn, then (for training) one answer."""
    roles = [t.role for t in turns]
    if roles not in (["user"], ["user", "assistant"]):
        raise EncodeError(
            "needs_chat_template",
            f"this model has no chat template, so a conversation must be one user turn and one assistant turn; "
            f"got roles {roles}",
            "Split the conversation into single question / answer lines, or use a model with a chat template",
        )
    prefix = turns[0].text
    return prefix, (turns[1].text if len(turns) == 2 else None)


def encode_training(processor: Any, conversation: Conversation, images: list[Image.Image]) -> dict[str, Any]:
    """`{input_ids, attention_mask, labels, ...the processor's image tensors}` of one conversation (batch dim 1)."""
    if not has_template(processor):
        prefix, suffix = _suffix_pair(conversation, conversation.turns)
        inputs = _process(processor, prefix, images, suffix=[suffix])
        return inputs
    turns = list(conversation.turns)
    full = _process(processor, _render(processor, turns, False), images)
    ids = full["input_ids"][0]
    labels = torch.full_like(ids, -100)
    for i, turn in enumerate(turns):
        if turn.role != "assistant":
            continue
        start = _prefix_length(processor, turns[:i], True, images, ids)
        end = _prefix_length(processor, turns[: i + 1], False, images, ids)
        labels[start:end] = ids[start:end]
    full["labels"] = labels[None]
    return full


def _prefix_length(
    processor: Any, turns: list[Turn], generation_prompt: bool, images: list[Image.Image], full: torch.Tensor
) -> int:
    used = sum(t.images for t in turns)
    ids = _process(processor, _render(processor, turns, generation_prompt), images[:used])["input_ids"][0]
    if len(ids) > len(full) or not torch.equal(ids, full[: len(ids)]):
        raise EncodeError(
            "template",
            "the chat template renders this conversation's first turns differently inside the whole "
            "conversation than alone, so the assistant tokens cannot be located",
            "Use the model's released chat template",
        )
    return len(ids)


def encode_prompt(processor: Any, conversation: Conversation, images: list[Image.Image]) -> dict[str, Any]:
    """The inputs that generate the last assistant turn: every turn before it, then the generation prompt.

    No labels: a prompt has no target token. PaliGemma's processor returns labels even without a suffix, all
    -100 (the prefix is masked), and a mean loss over no tokens is 0/0: the NaN eval loss it reported in fp32
    and bf16 alike. The eval loss comes from the item's training encoding instead (`data.PROMPT`)."""
    turns = list(conversation.turns[: conversation.last_answer])
    used = sum(t.images for t in turns)
    if not has_template(processor):
        prefix, _ = _suffix_pair(conversation, tuple(turns))
        inputs = _process(processor, prefix, images[:used])
    else:
        inputs = _process(processor, _render(processor, turns, True), images[:used])
    inputs.pop("labels", None)
    return inputs


def encode_question(processor: Any, question: str, image: Image.Image) -> dict[str, Any]:
    """One user turn (an image, then `question`) ready to generate from: the CLI's and the app's prompt."""
    turn = Turn("user", (("image", ""), ("text", question)))
    if not has_template(processor):
        return _process(processor, question, [image])
    return _process(processor, _render(processor, [turn], True), [image])


# ------------------------------------------------------------------------------------------------ batching


def _pad(rows: list[torch.Tensor], value: int, left: bool) -> torch.Tensor:
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), value, dtype=rows[0].dtype)
    for i, row in enumerate(rows):
        if left:
            out[i, width - len(row) :] = row
        else:
            out[i, : len(row)] = row
    return out


def _stack_images(rows: list[torch.Tensor]) -> torch.Tensor:
    """Image tensors of several items as the processor batches them: concatenated on dim 0 (Qwen's patch rows,
    one row per item elsewhere), zero-padded first where items hold different image counts (Idefics3's
    `(1, images, 3, H, W)`; the model drops all-zero images)."""
    if len({tuple(r.shape[1:]) for r in rows}) > 1:
        shape = [max(r.shape[d] for r in rows) for d in range(1, rows[0].dim())]
        padded = []
        for r in rows:
            out = torch.zeros((r.shape[0], *shape), dtype=r.dtype)
            out[(slice(None), *(slice(0, n) for n in r.shape[1:]))] = r
            padded.append(out)
        rows = padded
    return torch.cat(rows, dim=0)


def collate(items: list[dict[str, Any]], pad_id: int, left: bool) -> dict[str, Any]:
    """Pads the token sequences (right for training, left for generation: new tokens follow every prompt) and
    batches the processor's image tensors; tensors shaped like the sequence (token type ids) pad with 0."""
    batch: dict[str, Any] = {}
    length = {id(item): item["input_ids"].shape[-1] for item in items}
    for key in items[0]:
        rows = [item[key] for item in items if key in item]
        if not isinstance(rows[0], torch.Tensor):
            continue
        if key == "input_ids":
            batch[key] = _pad([r[0] for r in rows], pad_id, left)
        elif key == "labels":
            batch[key] = _pad([r[0] for r in rows], -100, left)
        elif all(
            r.dim() == 2 and r.shape[0] == 1 and r.shape[1] == length[id(i)]
            for r, i in zip(rows, items, strict=False)
        ):
            batch[key] = _pad([r[0] for r in rows], 0, left)
        else:
            batch[key] = _stack_images(rows)
    return batch
