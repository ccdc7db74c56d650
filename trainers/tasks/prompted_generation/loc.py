"""Florence-2 location tokens: pixel boxes <-> `<loc_N>` bins, and the strict parser of a target suffix.

The bins are the native processor's (`transformers` `Florence2PostProcessor.quantize` / `.dequantize`):
1000 bins per axis, `floor(x / (size / 1000))` clamped to 0..999, computed in float32 as torch does, and back
to the bin centre, truncated to int. A plain `round(x / size * 1000)` (the seed, roboflow maestro) yields
`<loc_1000>` at the right or bottom edge, which is not in the vocabulary. Written in numpy so that the
converter runs without torch; `tests/tasks/prompted_generation/test_florence_convert.py` checks it bin for bin against the native code.

A suffix is a run of `label<loc_a><loc_b><loc_c><loc_d>...` groups: a non-empty label, then a positive
multiple of 4 location tokens (several boxes for one label, as in phrase grounding).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

BINS = 1000
LOC_RE = re.compile(r"<loc_(\d+)>")
_TOKEN_RE = re.compile(r"<loc_(\d+)>|<[^<>]*>|[^<]+|<")
# What generation wraps around a suffix, removed before parsing (the post-processor removes them too).
WRAPPERS = ("<s>", "</s>", "<pad>")

TASK_TOKENS = ("<OD>", "<DENSE_REGION_CAPTION>", "<CAPTION_TO_PHRASE_GROUNDING>")


class SuffixError(ValueError):
    """A suffix that is not `label<loc_...>x4k` groups; the message says what and where (character offset)."""


def quantize(boxes: Sequence[Sequence[float]], size: tuple[int, int]) -> list[list[int]]:
    """Pixel boxes x1, y1, x2, y2 of an image of `size` = (width, height) → bins 0..999, as the native code."""
    if len(boxes) == 0:
        return []
    arr = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    per_bin = np.array([size[0] / BINS, size[1] / BINS] * 2, dtype=np.float32)
    bins = np.clip(np.floor(arr / per_bin), 0, BINS - 1)
    return bins.astype(np.int32).tolist()


def dequantize(bins: Sequence[Sequence[int]], size: tuple[int, int]) -> list[list[int]]:
    """Bins → pixel boxes (the bin centre, truncated to int), as the native `dequantize`."""
    if len(bins) == 0:
        return []
    arr = np.asarray(bins, dtype=np.float32).reshape(-1, 4)
    per_bin = np.array([size[0] / BINS, size[1] / BINS] * 2, dtype=np.float32)
    return ((arr + np.float32(0.5)) * per_bin).astype(np.int32).tolist()


def loc_tokens(box_bins: Sequence[int]) -> str:
    return "".join(f"<loc_{int(b)}>" for b in box_bins)


@dataclass(frozen=True)
class Group:
    """One label and its boxes in bins (each 4 ints)."""

    label: str
    bins: tuple[tuple[int, int, int, int], ...]


def format_suffix(groups: Sequence[Group]) -> str:
    return "".join(g.label + "".join(loc_tokens(b) for b in g.bins) for g in groups)


def strip_wrappers(text: str) -> str:
    for token in WRAPPERS:
        text = text.replace(token, "")
    return text.strip()


def parse_suffix(text: str) -> list[Group]:
    """The groups of a suffix, strictly: raises SuffixError for `<loc_1000>` and beyond, a loc count after a
    label that is not a positive multiple of 4, loc tokens without a label, an empty label or other tags."""
    text = strip_wrappers(text)
    groups: list[Group] = []
    label: str | None = None
    locs: list[int] = []

    def close(at: int) -> None:
        if label is None:
            return
        if not locs or len(locs) % 4:
            raise SuffixError(
                f"label {label!r} is followed by {len(locs)} location token(s) (at character {at}); a box is 4 "
                "(<loc_x1><loc_y1><loc_x2><loc_y2>), so the count must be a positive multiple of 4"
            )
        groups.append(Group(label, tuple(tuple(locs[i : i + 4]) for i in range(0, len(locs), 4))))  # type: ignore[misc]

    for match in _TOKEN_RE.finditer(text):
        piece, start = match.group(0), match.start()
        if match.group(1) is not None:
            value = int(match.group(1))
            if value >= BINS:
                raise SuffixError(
                    f"{piece} at character {start} is not in the vocabulary: bins are <loc_0>..<loc_{BINS - 1}> "
                    "(quantize with floor(x / (size / 1000)) clamped to 999, as the native processor does, not "
                    "round(x / size * 1000))"
                )
            if label is None:
                raise SuffixError(f"{piece} at character {start} has no label before it")
            locs.append(value)
        elif piece.startswith("<") and len(piece) > 1:
            raise SuffixError(
                f"unexpected tag {piece!r} at character {start}; a suffix holds labels and <loc_N> only"
            )
        else:
            close(start)
            label = piece.strip()
            locs = []
            if not label:
                raise SuffixError(f"empty label at character {start}")
    close(len(text))
    if not groups:
        raise SuffixError("no label<loc_...> group found")
    return groups
