"""Metric-based early stopping that fails loudly and survives resume.

HF's `EarlyStoppingCallback` silently disables itself when the metric key is missing
(transformers #28530); this one raises. Its counter is derived from `state.log_history` (restored
with every checkpoint), so a resumed run stops at the same evaluation as an uninterrupted one; a run resumed
from the checkpoint of the stopping evaluation itself (killed while it kept the best model) trains no further
step (`on_train_begin` + `RecipeTrainer._run_epoch`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from trainers.errors import RecipeError


@dataclass
class StoppingDecision:
    """Where the watched metric stands after one evaluation."""

    best_value: float
    best_step: int
    evals_without_improvement: int
    should_stop: bool


class MetricEarlyStopping(TrainerCallback):
    """Stop after `patience` evaluations without an improvement of more than `min_delta`."""

    def __init__(self, metric: str, patience: int, mode: str = "max", min_delta: float = 0.0) -> None:
        self.metric_key = metric if metric.startswith("eval_") else f"eval_{metric}"
        self.patience = patience
        self.mode = mode
        self.min_delta = min_delta
        self.last: StoppingDecision | None = None
        self.stopped_at_step: int | None = None

    def decide(self, history: list[tuple[int, float]]) -> StoppingDecision:
        """Pure rule over (step, value) pairs, oldest first."""
        best_value, best_step, since = math.nan, -1, 0
        for step, value in history:
            if best_step < 0 or self._improves(value, best_value):
                best_value, best_step, since = value, step, 0
            else:
                since += 1
        return StoppingDecision(best_value, best_step, since, since >= self.patience)

    def _improves(self, value: float, best: float) -> bool:
        if self.mode == "max":
            return value > best + self.min_delta
        return value < best - self.min_delta

    def _history(self, state: TrainerState) -> list[tuple[int, float]]:
        return [(e["step"], e[self.metric_key]) for e in state.log_history if self.metric_key in e]

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        """On resume, the restored history may already hold the stopping evaluation: stop before any step."""
        history = self._history(state)
        if history:
            self.last = self.decide(history)
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
        history = self._history(state)
        if not history or history[-1][0] != state.global_step:  # the Trainer logs before on_evaluate
            history.append((state.global_step, metrics[self.metric_key]))
        self.last = self.decide(history)
        if self.last.should_stop:
            control.should_training_stop = True
            self.stopped_at_step = state.global_step
        return control
