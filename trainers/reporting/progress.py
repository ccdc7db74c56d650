"""Progress bars: on rank 0 only, where a person watches (stderr is a terminal), and never with `--quiet`.

`launch.py --quiet` sets `TRAINERS_QUIET=1`, which the launchers pass on to every worker process, so the
Trainer's own bars and ours (evaluation, conversion, analysis) follow one switch.
"""

from __future__ import annotations

import os

QUIET_ENV = "TRAINERS_QUIET"


def progress_enabled(rank: int = 0) -> bool:
    return rank == 0 and os.isatty(2) and os.environ.get(QUIET_ENV, "") in ("", "0")
