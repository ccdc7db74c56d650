"""Metric-based early stopping that fails loudly and survives resume.

HF's `EarlyStoppingCallback` silently disables itself when the metric key is missing
(transformers #28530); this one raises. Its counter is derived from `state.log_history` (restored
with every checkpoint), so a resumed run stops at the same evaluation as an uninterrupted one; a run resumed
from the checkpoint of the stopping evaluation itself (killed while it kept the best model) trains no further
step (`on_train_begin` + `RecipeTrainer._run_epoch`).

With unfreezing stages (`trainers.freezing.schedule`), the same count decides when a plateau stage opens: a
stall opens the next closed plateau stage instead of stopping, the count restarts at every opening, and the
run stops only once no stage is left closed.
"""

from __future__ import annotations

import logging

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from trainers.errors import RecipeError
from trainers.freezing.schedule import ScheduleDecision, StageSchedule, decide
from trainers.reporting.summary import START_STEP, is_start_evaluation

logger = logging.getLogger(__name__)


class MetricEarlyStopping(TrainerCallback):
    """Stop after `patience` evaluations without an improvement of more than `min_delta`."""

    def __init__(
        self,
        metric: str,
        patience: int,
        mode: str = "max",
        min_delta: float = 0.0,
        schedule: StageSchedule | None = None,
    ) -> None:
        self.metric_key = metric if metric.startswith("eval_") else f"eval_{metric}"
        self.patience = patience
        self.mode = mode
        self.min_delta = min_delta
        self.schedule = schedule  # the run's unfreezing stages (shared with `ProgressiveUnfreezing`)
        self.last: ScheduleDecision | None = None
        self.stopped_at_step: int | None = None

    def decide(self, history: list[tuple[int, float]]) -> ScheduleDecision:
        """Pure rule over (step, value) pairs, oldest first, given the stages' openings known so far."""
        if self.schedule is None:
            return decide(history, self._improves, self.patience)
        return decide(
            history, self._improves, self.patience, self.schedule.triggers, self.schedule.openings()
        )

    def _improves(self, value: float, best: float) -> bool:
        if self.mode == "max":
            return value > best + self.min_delta
        return value < best - self.min_delta

    def _history(self, state: TrainerState) -> list[tuple[int, float]]:
        return [
            (e["step"], e[self.metric_key])
            for e in state.log_history
            if self.metric_key in e and not is_start_evaluation(e)
        ]

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        """On resume, the restored history may already hold the stopping evaluation: stop before any step."""
        history = self._history(state)
        if history:
            self.last = self.decide(history)  # recorded openings are in (the schedule loaded them)
            if self.last.should_stop:
                control.should_training_stop = True
                self.stopped_at_step = history[-1][0]
        return control

    def on_evaluate(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, metrics=None, **kwargs
    ):
        metrics = metrics or {}
        if self.metric_key not in metrics:
            raise RecipeError(
                f"early_stopping.metric: {self.metric_key!r} is not among the evaluation metrics "
                f"{sorted(k for k in metrics if k.startswith('eval_'))}. Fix early_stopping.metric in the recipe."
            )
        if state.global_step == START_STEP:  # before training: the metric is there, no decision
            return control
        history = self._history(state)
        if not history or history[-1][0] != state.global_step:  # the Trainer logs before on_evaluate
            history.append((state.global_step, metrics[self.metric_key]))
        self.last = self.decide(history)
        if self.last.opens is not None:
            self.schedule.record(state.log_history, self.last.opens, state.global_step, self.metric_key)
            logger.info(
                "stage %d opens: %s has not improved for %d evaluations (best %.6g at step %d)",
                self.last.opens,
                self.metric_key,
                self.schedule.triggers[self.last.opens].patience or self.patience,
                self.last.best_value,
                self.last.best_step,
            )
        if self.last.should_stop:
            control.should_training_stop = True
            self.stopped_at_step = state.global_step
        return control
