"""What changed between the recipe a run started with (its `recipe.json`) and the recipe resolved now.

A rerun into an output dir that holds a run may continue that run only when every change is one a run can
take mid-way: where it writes, how it reports, how often it saves and logs, how its processes are started.
Anything else (model, data, freezing, optimisation, evaluation, early stopping) would silently mix two
experiments in one set of checkpoints, so `trainers.rerun` stops and lists the changes instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

# Keys (and whole sections) a resumed run may change. `callbacks` are code, shown only by their repr.
# The number of processes is not judged here: launch.nproc under `--launcher` and WORLD_SIZE under an
# external launcher both end up in each checkpoint's manifest, and `trainers.rerun` compares that.
CONTINUABLE: frozenset[str] = frozenset(
    {
        "output_dir",
        "reporting",
        "callbacks",
        "demo",
        "slurm",
        "training.resume",
        "training.save_steps",
        "training.save_total_limit",
        "training.logging_steps",
        "training.eval_on_start",  # an evaluation before the first step; training is the same
        "training.num_workers",
        "training.gradient_checkpointing",  # same loss and gradients, less memory
        "model.attn_implementation",  # the same attention computed by other kernels
        "launch.launcher",
        "launch.nproc",
        "launch.nnodes",
        "launch.node_rank",
        "launch.master_addr",
        "launch.master_port",
    }
)

# The run's length. The LR schedule is built from the total number of steps, so with a decaying schedule
# (linear, cosine, ...) the remaining steps would follow another curve than the steps already taken.
LENGTH_KEYS: frozenset[str] = frozenset({"training.epochs", "training.max_steps"})

# HF schedulers whose LR at a step does not depend on the total number of steps.
TOTAL_INDEPENDENT_SCHEDULERS: frozenset[str] = frozenset(
    {"constant", "constant_with_warmup", "inverse_sqrt", "reduce_lr_on_plateau"}
)

_ABSENT = object()
_MAX_SHOWN = 80


@dataclass(frozen=True)
class Change:
    """One recipe key whose resolved value differs; `old`/`new` are JSON values (absent: `_ABSENT`)."""

    key: str
    old: Any
    new: Any

    def render(self) -> str:
        return f"{self.key}: {_show(self.old)} -> {_show(self.new)}"


def recipe_changes(old: dict[str, Any], new: dict[str, Any]) -> list[Change]:
    """Every leaf that differs, as dotted keys the way overrides spell them (`stages.0.epoch`)."""
    changes: list[Change] = []
    _walk(old, new, "", changes)
    return changes


def continuable(change: Change, lr_scheduler: str) -> bool:
    """Whether a run can continue from its checkpoint with this change (see the module docstring)."""
    if change.key in LENGTH_KEYS:
        return lr_scheduler in TOTAL_INDEPENDENT_SCHEDULERS
    return any(change.key == k or change.key.startswith(k + ".") for k in CONTINUABLE)


def stable_part(recipe_dict: dict[str, Any]) -> dict[str, Any]:
    """The recipe minus the continuable keys and the run's length: what a checkpoint's recipe hash covers."""

    def prune(node: Any, prefix: str) -> Any:
        if not isinstance(node, dict):
            return node
        kept = {}
        for key, value in node.items():
            dotted = f"{prefix}{key}"
            if dotted in CONTINUABLE or dotted in LENGTH_KEYS:
                continue
            kept[key] = prune(value, dotted + ".")
        return kept

    return prune(recipe_dict, "")


def _walk(old: Any, new: Any, prefix: str, out: list[Change]) -> None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in [*old, *(k for k in new if k not in old)]:
            _walk(old.get(key, _ABSENT), new.get(key, _ABSENT), f"{prefix}{key}.", out)
        return
    if isinstance(old, list) and isinstance(new, list) and old and new:
        for i in range(max(len(old), len(new))):
            _walk(
                old[i] if i < len(old) else _ABSENT, new[i] if i < len(new) else _ABSENT, f"{prefix}{i}.", out
            )
        return
    if old != new:
        out.append(Change(prefix.rstrip("."), old, new))


def _show(value: Any) -> str:
    """JSON, so strings are quoted; long lists and objects are cut (strings, paths included, never are)."""
    if value is _ABSENT:
        return "(absent)"
    text = json.dumps(value, default=str)
    return text if len(text) <= _MAX_SHOWN or isinstance(value, str) else text[: _MAX_SHOWN - 3] + "..."
