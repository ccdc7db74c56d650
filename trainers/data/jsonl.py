"""Reading JSON Lines: one record per non-blank line, a line that is not JSON reported to the bad-sample policy.

Captioning, classification and prompted generation read their JSONL files through `records`, so every task
names a malformed line the same way (`file:line: not valid JSON (...)`) and skips it under
`on_bad_sample="skip"`; what a record must hold is the task's to check.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from trainers.data_policy import BadSamples, DataError
from trainers.text_files import read_utf8


def records(path: Path, bad: BadSamples, hint: str) -> Iterator[tuple[str, Any]]:
    """(`file:line`, parsed value) of each non-blank line that parses; a line that does not is reported as
    "malformed_line" with `hint` (what a line should look like) and left out."""
    for lineno, line in enumerate(read_utf8(path, DataError).splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            bad.report(
                "malformed_line",
                where,
                f"not valid JSON ({error.msg} at column {error.colno})",
                f"Fix that line; {hint}",
            )
            continue
        yield where, record
