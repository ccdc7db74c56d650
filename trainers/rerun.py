"""What a run does with an output dir that already holds a run: continue it, keep it aside, or refuse.

Decided before any model is loaded, from the files alone (`recipe.json`, `data_fingerprint.json`, checkpoint manifests,
`training_summary.json`), so every rank reaches the same decision; only rank 0 then moves files. Rank 0's
own writes cannot change another rank's answer: it writes `recipe.json` only once it continues (the diff
is then empty) and moves or deletes only what makes the others see "nothing there" (start afresh too).

| `training.resume` | a previous run is there | decision |
|---|---|---|
| `auto` (default) | only continuable settings changed | continue from its newest complete checkpoint |
| `auto` | it finished with this recipe | nothing to train: "already complete" |
| `auto` | anything else changed | stop (exit 2), listing `key: old -> new` and the choices |
| `force` | anything | continue from its newest complete checkpoint, warning which settings changed |
| `never` | anything | move it to `<output_dir>/previous-<n>/`, start over |
| `overwrite` | anything | delete it, start over |

A requeued Slurm job (`SLURM_RESTART_COUNT >= 1`) always continues its own checkpoints: the previous run
there is itself. Which settings are continuable is `trainers.recipe.diff`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from trainers import checkpoints
from trainers.data.fingerprint import FINGERPRINT_JSON, differences, fingerprint
from trainers.errors import UserFacingError
from trainers.models.registry import current_family_ids
from trainers.recipe.config import Recipe, to_dict
from trainers.recipe.diff import (
    LENGTH_KEYS,
    TOTAL_INDEPENDENT_SCHEDULERS,
    Change,
    continuable,
    recipe_changes,
)

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
RECIPE_JSON = "recipe.json"
SUMMARY_JSON = "training_summary.json"
PREVIOUS_PREFIX = "previous-"
# Not part of a run: the Slurm job's own script and live log, the sweep's sub-runs, runs already set aside.
_NOT_RUN_FILES = ("slurm",)
_NOT_RUN_PREFIXES = (PREVIOUS_PREFIX, "sweep-", ".")
_MAX_LISTED = 12

Action = Literal["fresh", "continue", "complete", "set_aside", "overwrite"]


class RerunRefused(UserFacingError):
    """The output dir holds a run this recipe cannot continue; the user picks what happens to it."""


class RunAlreadyComplete(Exception):  # noqa: N818 - an outcome, not an error
    """The run in the output dir finished with this recipe: nothing to train (carries its summary)."""

    def __init__(self, message: str, summary: dict[str, Any]) -> None:
        super().__init__(message)
        self.message = message
        self.summary = summary


@dataclass
class RerunDecision:
    action: Action
    reason: str
    checkpoint: str | None = None  # continue from here
    changes: list[Change] = field(default_factory=list)  # vs the previous run's recipe.json
    summary: dict[str, Any] | None = None  # the finished run's training_summary.json

    @property
    def resume_from(self) -> str | None:
        return self.checkpoint if self.action == "continue" else None


def requeued(env: Mapping[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    return int(env.get("SLURM_RESTART_COUNT", "0") or 0) >= 1


def decide(
    recipe: Recipe, output_dir: Path, world_size: int, env: Mapping[str, str] | None = None
) -> RerunDecision:
    """What this run does with `output_dir` (read-only; raises `RerunRefused`)."""
    ckpt = checkpoints.find_resume_checkpoint(output_dir / CHECKPOINTS, quiet=True).checkpoint
    saved = _read_json(output_dir / RECIPE_JSON)
    summary = _read_json(output_dir / SUMMARY_JSON)
    current = resolved_recipe_dict(recipe)
    changes = (
        recipe_changes(current_family_ids(saved), current_family_ids(current)) if saved is not None else []
    )
    if requeued(env):
        return RerunDecision(
            "continue" if ckpt else "fresh",
            "a requeued Slurm job continues its own checkpoints",
            ckpt,
            changes,
        )
    if saved is None and summary is None and ckpt is None:
        return RerunDecision("fresh", f"{output_dir} holds no previous run")
    mode = recipe.training.resume
    if mode == "never":
        return RerunDecision("set_aside", "training.resume=never", changes=changes)
    if mode == "overwrite":
        return RerunDecision("overwrite", "training.resume=overwrite", changes=changes)
    if summary is None and ckpt is None:  # e.g. stopped by a data error: nothing to continue or to keep
        return RerunDecision(
            "fresh", f"the previous attempt in {output_dir} left no complete checkpoint", changes=changes
        )
    changed_data = _data_changes(recipe, output_dir)  # the same paths, other contents: like a changed key
    changes = [*changes, *changed_data]
    blocking = [c for c in changes if not continuable(c, recipe.training.lr_scheduler)]
    blocking += _world_change(ckpt, world_size)
    if saved is None and ckpt is not None:
        blocking += _hash_change(ckpt, to_dict(recipe))
    if blocking and mode == "auto":
        raise RerunRefused(_refusal(output_dir, blocking, recipe, ckpt, summary))
    if summary is not None and _finished(summary, ckpt, current):
        return RerunDecision(
            "complete", _complete_message(output_dir, summary, recipe), ckpt, changes, summary
        )
    if (
        ckpt is None
    ):  # finished, asked for another length, but its checkpoints are gone: nothing to continue from
        raise RerunRefused(_refusal(output_dir, blocking or changes, recipe, None, summary))
    reason = (
        "training.resume=force"
        if blocking
        else "only continuable settings changed"
        if changes
        else "same recipe"
    )
    return RerunDecision("continue", reason, ckpt, changes)


def apply(decision: RerunDecision, output_dir: Path) -> Path | None:
    """Rank 0: move the previous run aside or delete it as decided; returns where it went (set aside)."""
    entries = run_entries(output_dir)
    if decision.action == "set_aside" and entries:
        target = next_previous_dir(output_dir)
        target.mkdir()
        for entry in entries:
            os.replace(entry, target / entry.name)
        logger.warning(
            "training.resume=never: the previous run in %s was moved to %s (%d entries); starting over",
            output_dir,
            target,
            len(entries),
        )
        return target
    if decision.action == "overwrite" and entries:
        for entry in entries:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        logger.warning(
            "training.resume=overwrite: deleted the previous run in %s (%s); starting over",
            output_dir,
            ", ".join(sorted(e.name for e in entries)),
        )
    return None


def report(decision: RerunDecision, output_dir: Path) -> None:
    """One log line for a continued run, with what changed (a forced continuation warns)."""
    if decision.action != "continue" or not decision.changes:
        return
    shown = "; ".join(c.render() for c in decision.changes[:_MAX_LISTED])
    level = logging.WARNING if decision.reason != "only continuable settings changed" else logging.INFO
    logger.log(
        level, "continuing the run in %s (%s) with changed settings: %s", output_dir, decision.reason, shown
    )


def run_entries(output_dir: Path) -> list[Path]:
    """What a run wrote into `output_dir`: everything but slurm/, sweep-*/, previous-*/ and hidden files."""
    if not output_dir.is_dir():
        return []
    return sorted(
        e
        for e in output_dir.iterdir()
        if e.name not in _NOT_RUN_FILES and not e.name.startswith(_NOT_RUN_PREFIXES)
    )


def next_previous_dir(output_dir: Path) -> Path:
    taken = [
        int(p.name.removeprefix(PREVIOUS_PREFIX))
        for p in output_dir.glob(f"{PREVIOUS_PREFIX}*")
        if p.name.removeprefix(PREVIOUS_PREFIX).isdigit()
    ]
    return output_dir / f"{PREVIOUS_PREFIX}{max(taken, default=0) + 1}"


def resolved_recipe_dict(recipe: Recipe) -> dict[str, Any]:
    """The recipe as `recipe.json` stores it (JSON values, secrets redacted), so the two compare equal."""
    from trainers.reporting.redact import redact

    return redact(json.loads(json.dumps(to_dict(recipe), default=str)))


def _finished(summary: dict[str, Any], ckpt: str | None, current: dict[str, Any]) -> bool:
    """The summary's run reached its end (all steps, or early stopping) and this recipe asks for no more."""
    config = summary.get("config") or {}
    for key in ("epochs", "max_steps"):
        if (config.get("training") or {}).get(key) != current["training"].get(key):
            return False
    if ckpt is None:
        return True
    state = checkpoints.read_trainer_state(ckpt)
    if summary.get("global_steps") != state.get("global_step"):
        return False  # continued (with more epochs) after it finished, then interrupted
    stopped = (summary.get("early_stopping") or {}).get("stopped_at_step") is not None
    return stopped or state.get("global_step", 0) >= state.get("max_steps", float("inf"))


def _data_changes(recipe: Recipe, output_dir: Path) -> list[Change]:
    """The data paths whose contents differ from the fingerprint the previous run recorded (none recorded: [])."""
    saved = _read_json(output_dir / FINGERPRINT_JSON)
    if saved is None:
        return []
    return [
        Change(key, old, new) for key, old, new in differences(saved, fingerprint(recipe.data, output_dir))
    ]


def _world_change(ckpt: str | None, world_size: int) -> list[Change]:
    if ckpt is None:
        return []
    saved = checkpoints.read_manifest(ckpt).get("world_size")
    if saved is None or saved == world_size:
        return []
    return [Change("world size (processes)", saved, world_size)]


def _hash_change(ckpt: str, current: dict[str, Any]) -> list[Change]:
    saved = checkpoints.read_manifest(ckpt).get("recipe_hash")
    now = checkpoints.recipe_hash(current)
    return (
        [Change(f"recipe hash ({RECIPE_JSON} is missing, so the keys cannot be listed)", saved, now)]
        if (saved and saved != now)
        else []
    )


def _refusal(
    output_dir: Path, blocking: list[Change], recipe: Recipe, ckpt: str | None, summary: dict[str, Any] | None
) -> str:
    schedule = (
        f" (with lr_scheduler={recipe.training.lr_scheduler} the LR schedule is built from the total number "
        "of steps, so the remaining steps would follow another curve)"
    )
    shown = "; ".join(c.render() + (schedule if c.key in LENGTH_KEYS else "") for c in blocking[:_MAX_LISTED])
    more = f"; and {len(blocking) - _MAX_LISTED} more" if len(blocking) > _MAX_LISTED else ""
    state = "a finished" if summary is not None else "an unfinished"
    where = (
        f"its newest complete checkpoint is {Path(ckpt).name}"
        if ckpt
        else "it has no complete checkpoint left"
    )
    force = (
        f"; or training.resume=force to continue from {Path(ckpt).name} with the new settings anyway"
        if ckpt
        else ""
    )
    previous = next_previous_dir(output_dir)
    return (
        f"output_dir {output_dir} holds {state} run whose settings or data differ (its {RECIPE_JSON}, "
        f"checkpoint manifest and {FINGERPRINT_JSON}): "
        f"{shown}{more}; {where}. Nothing was trained or changed. Choose one: another output dir "
        f"(--output-dir or output_dir=); training.resume=never to start over there (the previous run is moved "
        f"to {previous}/); training.resume=overwrite to start over deleting it{force}."
    )


def _complete_message(output_dir: Path, summary: dict[str, Any], recipe: Recipe) -> str:
    best = summary.get("best_metric") or {}
    score = f"; best {best.get('name')} = {best.get('value')}" if best.get("name") else ""
    longer = (
        " (or raise training.epochs to continue it)"
        if recipe.training.lr_scheduler in TOTAL_INDEPENDENT_SCHEDULERS
        else ""
    )
    return (
        f"already complete: {output_dir} holds a finished run of this recipe ({summary.get('global_steps')} steps"
        f"{score}; see {SUMMARY_JSON}); nothing was trained. To train again, rerun with training.resume=never "
        f"(the finished run is moved to {next_previous_dir(output_dir)}/) or another --output-dir{longer}."
    )


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None
