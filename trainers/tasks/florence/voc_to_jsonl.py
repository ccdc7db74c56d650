"""Deprecated command: `python -m trainers.tasks.florence.voc_to_jsonl` runs
`python -m trainers.tasks.prompted_generation.voc_to_jsonl` with the same arguments (for one release)."""

from __future__ import annotations

import sys

from trainers.tasks.prompted_generation.voc_to_jsonl import main, run

DEPRECATION = (
    "python -m trainers.tasks.florence.voc_to_jsonl is deprecated: use "
    "python -m trainers.tasks.prompted_generation.voc_to_jsonl (the old command goes in the next release)."
)

__all__ = ["DEPRECATION", "main", "run"]

if __name__ == "__main__":
    print(DEPRECATION, file=sys.stderr)
    run()
