"""The line `launch.py --launcher` prints last when a rank of a multi-rank run died: which rank, what it left.

The launcher's own report (torchrun's `ChildFailedError` block) comes first and is long; this line says which
rank died (`trainers.launchers.worker_watch`) and what rerunning the same command does: resume from the
newest complete checkpoint in the output dir (`trainers.checkpoints`), or start over when there is none yet.
"""

from __future__ import annotations

from pathlib import Path

from trainers import checkpoints
from trainers.launchers.worker_watch import Death
from trainers.recipe.config import Recipe

CHECKPOINTS = "checkpoints"


def rank_died_message(recipe: Recipe, death: Death | None, status: int) -> str:
    """One line: the rank (pid, host) that died and how, the launcher's status, what a rerun resumes from."""
    if death is None:
        who = "a worker process stopped without an error of ours (see the launcher's report above)"
    else:
        if death.how is None:
            how = (
                "died without a Python error (killed by a signal, e.g. the out-of-memory killer or kill -9, "
                "or crashed)"
            )
        elif death.how.startswith("exit "):
            how = f"ended with exit status {death.how.removeprefix('exit ')}"
        else:
            how = f"stopped on {death.how} (its traceback is above)"
        who = (
            f"rank {death.rank} (pid {death.pid} on {death.host}) {how}; the launcher stopped the other ranks"
        )
    directory = Path(recipe.resolved_output_dir()) / CHECKPOINTS
    last = checkpoints.find_resume_checkpoint(directory, quiet=True).checkpoint
    rerun = (
        f"rerunning the same command resumes from {Path(last).name} ({last})"
        if last
        else f"no complete checkpoint was saved yet in {directory}, so rerunning the same command starts over"
    )
    return f"{who}; launcher exit status {status}. {rerun[0].upper()}{rerun[1:]}."
