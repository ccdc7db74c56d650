"""Deprecated name of `trainers.tasks.prompted_generation` (the task is named after what it does, not a model).

`FlorenceData`, `FlorenceEval` and `TASK` still resolve here for one release, each with one deprecation line on
stderr; `python -m trainers.tasks.florence.voc_to_jsonl` forwards to the new converter.
"""

from __future__ import annotations

import sys
from typing import Any

_RENAMED = {"FlorenceData": "PromptedData", "FlorenceEval": "PromptedEval", "TASK": "TASK"}


def __getattr__(name: str) -> Any:
    if name not in _RENAMED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import trainers.tasks.prompted_generation as renamed

    new = _RENAMED[name]
    print(
        f"trainers.tasks.florence.{name} is deprecated: use trainers.tasks.prompted_generation.{new} "
        "(the old name goes in the next release).",
        file=sys.stderr,
    )
    return getattr(renamed, new)
