"""When each unfreezing stage opens, and when early stopping may end the run: one rule for both.

A stage opens at a fixed step (`epoch=N`: N epochs of optimizer steps; `step=N`) or at an evaluation where
the early-stopping metric stalled (`on_plateau=True`). Plateau openings are decisions, not functions of the
step, so they are recorded in the trainer state (`stage_opened` on the evaluation's `log_history` entry,
saved with every checkpoint) and a resumed run reads them back instead of deciding again. The rule is pure
over the evaluation history and the openings, so a replay after a resume reaches the same counter.

The decision needs no collective of its own: the evaluator broadcasts rank 0's metrics (and the Trainer's
`eval_loss` is a gathered mean), so every rank decides from the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

OPENED_KEY = "stage_opened"  # on the log_history entry of the evaluation that opened a plateau stage


@dataclass(frozen=True)
class StageTrigger:
    """What opens one stage: `kind` with its epoch or step (`at`), or a plateau with its patience."""

    index: int
    kind: Literal["epoch", "step", "plateau"]
    at: int | None = None
    patience: int | None = None


@dataclass(frozen=True)
class ScheduleDecision:
    """Where the watched metric and the stages stand after one evaluation."""

    best_value: float
    best_step: int
    evals_without_improvement: int  # since the best evaluation or the last opening, whichever is later
    opens: int | None  # the plateau stage this evaluation opens
    should_stop: bool


class StageSchedule:
    """The opening step of every stage: fixed ones once the epoch length is known, plateau ones as recorded."""

    def __init__(self, triggers: Sequence[StageTrigger]) -> None:
        self.triggers = list(triggers)
        self.steps_per_epoch: int | None = None
        self.recorded: dict[int, int] = {}  # plateau stage index -> step of the evaluation that opened it

    @property
    def has_plateau(self) -> bool:
        return any(t.kind == "plateau" for t in self.triggers)

    def opening_step(self, index: int) -> int | None:
        """The step after which stage `index` trains; None while a plateau stage is undecided."""
        trigger = self.triggers[index]
        if trigger.kind == "step":
            return trigger.at
        if (
            trigger.kind == "epoch"
        ):  # unknown before training starts (an evaluation before train() opens nothing)
            return None if self.steps_per_epoch is None else trigger.at * self.steps_per_epoch
        return self.recorded.get(index)

    def openings(self) -> dict[int, int]:
        """Every stage with a known opening step (fixed ones may lie in the future)."""
        steps = {t.index: self.opening_step(t.index) for t in self.triggers}
        return {i: s for i, s in steps.items() if s is not None}

    def load(self, log_history: Sequence[Mapping]) -> None:
        """Read back the recorded plateau openings (a resumed run: from the checkpoint's trainer state)."""
        self.recorded = {int(e[OPENED_KEY]): int(e["step"]) for e in log_history if OPENED_KEY in e}

    def record(self, log_history: list[dict], index: int, step: int, metric_key: str) -> None:
        """Mark the evaluation at `step` as the one that opened stage `index` (saved with the checkpoint)."""
        self.recorded[index] = step
        for entry in reversed(log_history):
            if entry.get("step") == step and metric_key in entry:
                entry[OPENED_KEY] = index
                return
        log_history.append({OPENED_KEY: index, "step": step})


def decide(
    history: Sequence[tuple[int, float]],
    improves: Callable[[float, float], bool],
    stop_patience: int | None,
    triggers: Sequence[StageTrigger] = (),
    openings: Mapping[int, int] | None = None,
) -> ScheduleDecision:
    """The rule after the last evaluation of `history` ((step, value) pairs, oldest first).

    `openings` are the known opening steps (fixed stages, recorded plateau openings). The count of evaluations
    without improvement restarts at the best evaluation and at every opening. The next plateau stage (every
    stage above it open) opens when the count reaches its patience (default `stop_patience`); the run stops
    when the count reaches `stop_patience` and no stage is left closed.
    """
    openings = dict(openings or {})
    best_value, best_step = math.nan, -1
    for step, value in history:
        if best_step < 0 or improves(value, best_value):
            best_value, best_step = value, step
    now = history[-1][0] if history else 0
    opened = {i: s for i, s in openings.items() if s <= now}
    restart = max([best_step, *opened.values()])
    since = sum(1 for step, _ in history if step > restart)

    opens = None
    pending = [t for t in triggers if t.index not in opened]
    if pending and pending[0].kind == "plateau":
        patience = pending[0].patience or stop_patience
        if patience is not None and since >= patience:
            opens, since = pending[0].index, 0
            pending = pending[1:]
    should_stop = stop_patience is not None and not pending and since >= stop_patience
    return ScheduleDecision(best_value, best_step, since, opens, should_stop)
