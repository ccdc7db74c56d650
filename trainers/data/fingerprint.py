"""A cheap fingerprint of a recipe's data, recorded with the run, so data changed in place is noticed.

`recipe.json` alone cannot tell a rerun that the images under the same names were overwritten, or that the
annotation file was edited: the paths are the same. For each path the data section names: a file
(annotations: COCO JSON, caption JSON, JSONL) gets its size and a SHA-256 of its content; a folder (images) gets its file list with each file's size and mtime (no image is read).
Walking a folder of 100k images is a `stat` per file. `trainers.rerun` treats a difference like a changed
recipe key: the run stops and says what changed, with the same choices.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

FINGERPRINT_JSON = "data_fingerprint.json"
FORMAT = 1
_LISTED = 20_000  # folders up to this many files keep their listing, so a change can name the files
_SHOWN = 3


def fingerprint(data: Any, output_dir: Path | None = None) -> dict[str, Any]:
    """`{"format": 1, "paths": {recipe key: entry}}` for every existing file or folder the data section names.

    The section is walked generically (dataclass fields, dicts, lists), so every task's layout is covered
    (nested splits, `extra_val` sets, a `datasets` folder on disk) without a list kept per task. The run's
    own `output_dir`, should it lie inside a data folder, is left out: the run changes it.
    """
    skip = Path(output_dir).resolve() if output_dir is not None else None
    paths: dict[str, Any] = {}
    for key, value in _strings(data, "data"):
        path = Path(value).expanduser()
        if path.is_file():
            paths[key] = _file_entry(path)
        elif path.is_dir():
            paths[key] = _dir_entry(path, skip)
    return {"format": FORMAT, "paths": paths}


def _strings(node: Any, key: str) -> Iterator[tuple[str, str]]:
    """(dotted recipe key, value) of every string under `node` that could be a path."""
    if isinstance(node, str | os.PathLike):
        text = os.fspath(node)
        if text and "\n" not in text and len(text) < 4096:
            yield key, text
    elif dataclasses.is_dataclass(node) and not isinstance(node, type):
        for f in dataclasses.fields(node):
            yield from _strings(getattr(node, f.name), f"{key}.{f.name}")
    elif isinstance(node, dict):
        for name, value in node.items():
            yield from _strings(value, f"{key}.{name}")
    elif isinstance(node, list | tuple):
        for i, value in enumerate(node):
            yield from _strings(value, f"{key}.{i}")


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(key, what it was, what it is) for each data path whose content differs; [] when `old` is unusable."""
    if not isinstance(old, dict) or old.get("format") != FORMAT:
        return []
    before, after = old.get("paths") or {}, new.get("paths") or {}
    changed = []
    for key in sorted(set(before) & set(after)):  # a path added or removed is a recipe key change already
        a, b = before[key], after[key]
        if a.get("digest") == b.get("digest"):
            continue
        if a.get("kind") == "file" and b.get("kind") == "file":
            changed.append((f"{key} contents", _describe_file(a), _describe_file(b)))
        else:
            changed.append((f"{key} contents", _describe_dir(a), _describe_dir(b, a)))
    return changed


def _file_entry(path: Path) -> dict[str, Any]:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    stat = path.stat()
    return {"kind": "file", "path": str(path), "bytes": stat.st_size, "digest": digest.hexdigest()}


def _dir_entry(path: Path, skip: Path | None) -> dict[str, Any]:
    listing: dict[str, list[int]] = {}
    for root, dirs, names in os.walk(path):
        dirs[:] = sorted(d for d in dirs if skip is None or (Path(root) / d).resolve() != skip)
        for name in sorted(names):
            full = Path(root) / name
            try:
                stat = full.stat()
            except OSError:
                continue
            listing[full.relative_to(path).as_posix()] = [stat.st_size, stat.st_mtime_ns]
    digest = hashlib.sha256(repr(sorted(listing.items())).encode()).hexdigest()
    entry: dict[str, Any] = {
        "kind": "dir",
        "path": str(path),
        "files": len(listing),
        "bytes": sum(size for size, _ in listing.values()),
        "digest": digest,
    }
    if len(listing) <= _LISTED:
        entry["listing"] = listing
    return entry


def _describe_file(entry: dict[str, Any]) -> str:
    return f"{entry.get('bytes')} bytes, sha256 {str(entry.get('digest'))[:12]}"


def _describe_dir(entry: dict[str, Any], before: dict[str, Any] | None = None) -> str:
    text = f"{entry.get('files')} files, {entry.get('bytes')} bytes"
    if before is None or "listing" not in before or "listing" not in entry:
        return text
    old, new = before["listing"], entry["listing"]
    parts = []
    for label, names in (
        ("rewritten", sorted(n for n in set(old) & set(new) if old[n] != new[n])),
        ("added", sorted(set(new) - set(old))),
        ("removed", sorted(set(old) - set(new))),
    ):
        if names:
            more = f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
            parts.append(f"{len(names)} {label} ({', '.join(names[:_SHOWN])}{more})")
    return f"{text}: {'; '.join(parts)}" if parts else text
