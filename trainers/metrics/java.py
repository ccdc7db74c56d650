"""The Java runtime that METEOR needs, checked when a recipe asks for METEOR (at recipe load, `--dry-run` too).

pycocoevalcap's METEOR runs `java -jar meteor-1.5.jar` from PATH; without it the first score (the plan's
constant-caption baseline, or the first evaluation) would end in a `FileNotFoundError` traceback.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

from trainers.errors import RecipeError

JAVA_METRICS = ("meteor",)  # metrics computed by a Java program
JAVA_PACKAGE = "default-jre-headless"  # the Debian / Ubuntu package that puts `java` on PATH
# True while a recipe is checked on a machine that only submits it (a Slurm login node): the job's nodes score,
# and the job checks again there when it loads the recipe
_ELSEWHERE: ContextVar[bool] = ContextVar("java_checked_elsewhere", default=False)


@contextmanager
def java_checked_where_the_run_scores(elsewhere: bool) -> Iterator[None]:
    """Within the block, `check_java` passes when `elsewhere` (the run is submitted to other machines)."""
    token = _ELSEWHERE.set(elsewhere or _ELSEWHERE.get())
    try:
        yield
    finally:
        _ELSEWHERE.reset(token)


def defer_java_check_to_the_nodes() -> None:
    """For the rest of this context (`launch.py` runs each call in its own): the job's nodes check for Java."""
    _ELSEWHERE.set(True)


def check_java(metrics: Sequence[str], key: str) -> None:
    """Raise a RecipeError naming the metric, the runtime, the package and the override without it."""
    needing = [m for m in metrics if m in JAVA_METRICS]
    if not needing or _ELSEWHERE.get() or shutil.which("java") is not None:
        return
    rest = [m for m in metrics if m not in JAVA_METRICS]
    without = f"{key}={','.join(rest)}" if rest else f"{key}=rouge_l,cider_d"
    raise RecipeError(
        f"{key} asks for {', '.join(needing)}, which runs on Java (pycocoevalcap's METEOR 1.5 jar), but no "
        f"`java` is on PATH. Install a Java runtime (Debian/Ubuntu: apt-get install {JAVA_PACKAGE}) or "
        f"leave METEOR out: {without} (and out of early_stopping.metric, if it names it)."
    )
