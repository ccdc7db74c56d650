"""The recipe side of a mixed training split: `data.train=[MixSource(...), ...]` (no torch import).

A task's training split may list several sources instead of one, each the task's own files or a
`DatasetSource`. With a `weight` on every entry the sources are sampled with those probabilities (weights
are normalised by their sum); with no weights they are concatenated. `trainers.data.mixing` builds the mix
for every task the same way, through the task's own `build`, one source at a time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from trainers.data.source_config import DatasetSource
from trainers.errors import RecipeError


@dataclass
class MixSource:
    """One source of a mixed training split: the task's own file(s) or a `DatasetSource`, its sampling
    weight (None: concatenate), and the name it is reported under (default: `source<i>`)."""

    source: str | DatasetSource
    weight: float | None = None
    name: str | None = None


def as_mix(value: Any, key: str = "data.train") -> list[MixSource] | None:
    """The entries of a mixed split (plain paths and `DatasetSource`s become unweighted entries), checked;
    None when `value` is a single source."""
    if not isinstance(value, list | tuple):
        return None
    entries = [v if isinstance(v, MixSource) else MixSource(v) for v in value]
    check_mix(entries, key)
    return entries


def check_mix(entries: list[MixSource], key: str) -> None:
    """Raise a RecipeError for a mix that cannot be sampled: empty, weights on some entries only, a weight
    that is not a finite number >= 0, weights summing to 0, an entry that is not a source, names repeated."""
    if not entries:
        raise RecipeError(f"{key} is an empty list; list at least one source (a file or a DatasetSource).")
    for i, entry in enumerate(entries):
        if not isinstance(entry.source, str | DatasetSource):
            raise RecipeError(
                f"{key}[{i}].source is a {type(entry.source).__name__}; a mixed split's source is the task's own "
                "file (a path) or a DatasetSource."
            )
    weighted = [e.weight is not None for e in entries]
    if any(weighted) and not all(weighted):
        missing = ", ".join(f"{key}[{i}]" for i, w in enumerate(weighted) if not w)
        raise RecipeError(
            f"{key}: some sources have a weight and {missing} has none. Give every MixSource a weight "
            "(sampling probabilities, normalised by their sum) or none (the sources are concatenated)."
        )
    if all(weighted):
        for i, entry in enumerate(entries):
            weight = entry.weight
            if (
                isinstance(weight, bool)
                or not isinstance(weight, int | float)
                or not math.isfinite(weight)
                or weight < 0
            ):
                raise RecipeError(
                    f"{key}[{i}].weight={weight!r}: a weight is a finite number >= 0 (a sampling probability "
                    "before normalisation)."
                )
        if sum(float(e.weight) for e in entries) <= 0:  # type: ignore[arg-type]
            raise RecipeError(
                f"{key}: the weights sum to 0; at least one source needs a positive weight (they are "
                "normalised by their sum into sampling probabilities)."
            )
    names = mix_names(entries)
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise RecipeError(
            f"{key}: the name(s) {', '.join(map(repr, repeated))} are given to several sources; "
            "each MixSource's name must be unique (it labels its count in the summary)."
        )


def mix_names(entries: list[MixSource]) -> list[str]:
    """Each entry's reporting name: its `name`, or `source<i>`."""
    return [e.name or f"source{i}" for i, e in enumerate(entries)]
