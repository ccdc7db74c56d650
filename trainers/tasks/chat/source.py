"""Conversations from a `datasets` source: a `messages` column (the JSONL's list of {role, content} turns) and an
image column holding one image, a list of them (`Image` features) or file names.

Rows are checked as JSONL lines are (`parse_messages`), each problem naming the split and row index; the
images are counted from the stored bytes without decoding them and opened only when an item is encoded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainers.data.images import ImageRef, RowImage
from trainers.data.source_config import DatasetSource
from trainers.data_policy import BadSamples
from trainers.tasks.chat.conversations import Conversation, parse_messages

ROW_HINT = (
    "a row holds messages=[{'role': 'user', 'content': '<image>How many circles?'}, "
    "{'role': 'assistant', 'content': '3'}] and its images (an Image, a list of Images, or file names)"
)


def _as_list(value: Any) -> list[Any]:
    """One row's image column as a list: None → [], one image (bytes dict, file name, PIL image) → [it]."""
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def _undecoded(dataset: Any, column: str, count: int) -> list[Any]:
    """The first `count` rows' image values as stored (`{"bytes", "path"}` dicts or file names): no decode."""
    import datasets

    table = dataset.table.select_columns([column])
    feature = table.features[column]
    if isinstance(feature, datasets.Image):
        table = table.cast_column(column, datasets.Image(decode=False))
    elif isinstance(feature, datasets.List | datasets.Sequence) and isinstance(
        feature.feature, datasets.Image
    ):
        table = table.cast_column(column, datasets.List(datasets.Image(decode=False)))
    return list(table.select(range(count))[column])


def _missing_file(value: Any, base: Path | None) -> Path | None:
    """The file an image value names when it has no bytes and the file does not exist, else None."""
    if isinstance(value, dict) and value.get("bytes"):
        return None
    name = value.get("path") if isinstance(value, dict) else value
    if not isinstance(name, str) or not name:
        return Path(str(name))
    path = Path(name) if Path(name).is_absolute() or base is None else base / name
    return None if path.is_file() else path


def read_source_conversations(
    source: DatasetSource, key: str, bad: BadSamples, limit: int | None = None, check_files: bool = True
) -> list[Conversation]:
    """The checked conversations of a `datasets` split (the first `limit` rows), its images as `RowImage`s."""
    from trainers.data.source_rows import load_map_source, require_columns
    from trainers.data.sources import column_values

    dataset = load_map_source(source, key)
    require_columns(
        dataset,
        key,
        ("messages",),
        "a chat set needs each row's conversation (a list of {role, content} turns)",
    )
    count = len(dataset) if limit is None else min(limit, len(dataset))
    messages = column_values(dataset, "messages")[:count]
    column = dataset.mapper.columns["image"]
    images = _undecoded(dataset, column, count)
    base = dataset.mapper.base
    found: list[Conversation] = []
    for row in range(count):
        where = f"{key} row {row} ({source.path})"
        turns_in = messages[row]
        if not isinstance(turns_in, list) or not turns_in:
            bad.report(
                "malformed_line",
                where,
                "its messages are missing, empty or not a list",
                f"Fix it; {ROW_HINT}",
            )
            continue
        stored = _as_list(images[row])
        turns = parse_messages(where, turns_in, len(stored), bad, f"column {column!r}")
        if turns is None:
            continue
        missing = next((p for p in map(lambda v: _missing_file(v, base), stored) if p), None)
        if check_files and missing is not None:
            bad.report(
                "missing_image",
                where,
                f"column {column!r}: {missing} not found",
                f"Add the image, fix the file name (relative to {key}.image_dir) or remove the row",
            )
            continue
        several = isinstance(images[row], list | tuple)
        refs: tuple[ImageRef, ...] = tuple(
            RowImage(dataset, row, key, n if several else None) for n in range(len(stored))
        )
        found.append(Conversation(where, refs, turns))
    return found
