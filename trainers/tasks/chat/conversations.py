"""Reading chat JSONL into checked conversations (no model, no processor: the plan's baseline reads them too).

Every problem names the file and line: a line that is not a conversation, an unknown role, a conversation
without an assistant turn, an `<image>` placeholder count that differs from the line's images, a missing image.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainers.data import jsonl
from trainers.data.images import ImageRef
from trainers.data_policy import BadSamples

IMAGE_PLACEHOLDER = "<image>"
ROLES = ("system", "user", "assistant")
LINE_HINT = (
    'a line looks like {"images": ["0001.png"], "messages": [{"role": "user", "content": '
    '"<image>How many circles?"}, {"role": "assistant", "content": "3"}]}'
)


@dataclass(frozen=True)
class Turn:
    """One message: its role and its content as parts, `("image", "")` or `("text", "...")`, in order."""

    role: str
    parts: tuple[tuple[str, str], ...]

    @property
    def text(self) -> str:
        return "".join(t for kind, t in self.parts if kind == "text")

    @property
    def images(self) -> int:
        return sum(kind == "image" for kind, _ in self.parts)

    def hf(self) -> dict[str, Any]:
        """The Hugging Face message form the chat templates read (`content` as typed parts)."""
        content = [{"type": "image"} if k == "image" else {"type": "text", "text": t} for k, t in self.parts]
        return {"role": self.role, "content": content}


@dataclass(frozen=True)
class Conversation:
    where: str  # file:line
    images: tuple[ImageRef, ...]  # files, or images of a `datasets` row
    turns: tuple[Turn, ...]

    @property
    def answer(self) -> str:
        """The last assistant turn: what evaluation generates."""
        return self.turns[self.last_answer].text

    @property
    def last_answer(self) -> int:
        return max(i for i, t in enumerate(self.turns) if t.role == "assistant")

    @property
    def question(self) -> str:
        """The user text just before the last answer (for tables and examples)."""
        before = [t for t in self.turns[: self.last_answer] if t.role == "user"]
        return before[-1].text if before else ""


def split_parts(content: Any) -> tuple[tuple[str, str], ...] | None:
    """A message's content as parts: a string with `<image>` placeholders, or a list of typed parts."""
    if isinstance(content, str):
        parts: list[tuple[str, str]] = []
        for i, piece in enumerate(content.split(IMAGE_PLACEHOLDER)):
            if i:
                parts.append(("image", ""))
            if piece:
                parts.append(("text", piece))
        return tuple(parts)
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict):
                return None
            if part.get("type") == "image":
                parts.append(("image", ""))
            elif part.get("type") == "text" and isinstance(part.get("text"), str):
                parts.append(("text", part["text"]))
            else:
                return None
        return tuple(parts)
    return None


def parse_messages(
    where: str, messages: Any, images: int | None, bad: BadSamples, images_key: str = '"images"'
) -> tuple[Turn, ...] | None:
    """The checked turns of one conversation holding `images` images (None: not counted), or None once its
    problem is reported to `bad`: an unknown role, content that is not text / image parts, an image in an
    answer, no assistant turn, a placeholder count that differs from the images."""
    turns: list[Turn] = []
    for n, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ROLES:
            bad.report(
                "unknown_role",
                where,
                f"messages[{n}] has role {role!r}; roles are {', '.join(ROLES)}",
                "Fix the role",
            )
            return None
        parts = split_parts(message.get("content"))
        if parts is None:
            bad.report(
                "malformed_line",
                where,
                f'messages[{n}]: "content" is neither a string nor a list of image / text parts',
                f"Fix that message; {LINE_HINT}",
            )
            return None
        if role == "assistant" and any(kind == "image" for kind, _ in parts):
            bad.report(
                "image_in_answer",
                where,
                f"messages[{n}]: an assistant turn holds an image",
                "Move the image to a user turn",
            )
            return None
        turns.append(Turn(role, parts))
    if not any(t.role == "assistant" for t in turns):
        bad.report(
            "no_assistant_turn",
            where,
            "the conversation has no assistant turn, so there is nothing to learn or to evaluate",
            'Add the answer as {"role": "assistant", "content": "..."} or remove the line',
        )
        return None
    placeholders = sum(t.images for t in turns)
    if images is not None and placeholders != images:
        bad.report(
            "image_count",
            where,
            f"{placeholders} image placeholder(s) ({IMAGE_PLACEHOLDER} or image parts) but {images} image(s) "
            f"in {images_key}",
            "Give each placeholder one image, in order",
        )
        return None
    return tuple(turns)


def parse(
    where: str, record: Any, images: Path, bad: BadSamples, check_files: bool = True
) -> Conversation | None:
    """One checked conversation, or None once its problem is reported to `bad`."""
    if not isinstance(record, dict) or not isinstance(record.get("messages"), list) or not record["messages"]:
        bad.report(
            "malformed_line",
            where,
            'key "messages" missing, empty or not a list',
            f"Fix that line; {LINE_HINT}",
        )
        return None
    files = record.get("images", [record["image"]] if isinstance(record.get("image"), str) else [])
    if not isinstance(files, list) or not all(isinstance(f, str) and f for f in files):
        bad.report(
            "malformed_line", where, 'key "images" is not a list of file names', f"Fix that line; {LINE_HINT}"
        )
        return None
    turns = parse_messages(where, record["messages"], len(files), bad)
    if turns is None:
        return None
    paths = tuple(Path(f) if Path(f).is_absolute() else images / f for f in files)
    for path in paths if check_files else ():
        if not path.is_file():
            bad.report(
                "missing_image",
                where,
                f'key "images": {path} not found',
                "Add the image, fix the path (relative to data.images) or remove the line",
            )
            return None
    return Conversation(where, paths, turns)


def read_conversations(
    path: Path, images: Path, bad: BadSamples, check_files: bool = True
) -> list[Conversation]:
    """The checked conversations of one JSONL file."""
    found = []
    for where, record in jsonl.records(path, bad, LINE_HINT):
        conversation = parse(where, record, images, bad, check_files)
        if conversation is not None:
            found.append(conversation)
    return found
