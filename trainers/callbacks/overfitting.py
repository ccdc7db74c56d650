"""The overfitting signal (the lesson seeds keep learning the hard way): say so, with the epoch where it began,
when the validation loss rises for `patience` evaluations while the training loss falls, or when the watched
metric has peaked and stayed more than 1% below its best for `patience` evaluations.

Like early stopping it is derived from `state.log_history` alone, so a resumed run reports what an
uninterrupted one would. It only reports: stopping is early stopping's job.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

from transformers import TrainerCallback

from trainers.reporting.summary import is_start_evaluation

logger = logging.getLogger(__name__)


@dataclass
class OverfittingSignal:
    kind: str  # "val_loss_rising" | "metric_falling"
    since_epoch: float | None  # the last good evaluation: where the trend began
    since_step: int
    detected_at_step: int
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _evaluations(history: list[dict[str, Any]], metric_key: str) -> list[dict[str, Any]]:
    """Per evaluation: step, epoch, eval loss, watched metric, mean training loss since the previous one."""
    evals, window, previous = [], [], None
    for entry in history:
        if is_start_evaluation(entry):  # before training: no training loss to compare it with
            continue
        if "loss" in entry and "eval_loss" not in entry:
            window.append(entry["loss"])
        if "eval_loss" in entry and entry.get("step") != previous:
            previous = entry.get("step")
            evals.append(
                {
                    "step": entry.get("step"),
                    "epoch": entry.get("epoch"),
                    "val_loss": entry["eval_loss"],
                    "metric": entry.get(metric_key),
                    "train_loss": sum(window) / len(window) if window else None,
                }
            )
            window = []
    return evals


def detect(
    history: list[dict[str, Any]],
    metric_key: str,
    greater_is_better: bool,
    patience: int = 2,
    min_drop: float = 0.01,
) -> OverfittingSignal | None:
    """The signal the log history shows now, or None. The metric has fallen when the last `patience`
    evaluations are each worse than its best by more than `min_drop` of the best's magnitude."""
    evals = _evaluations(history, metric_key)
    if len(evals) <= patience:
        return None
    first = len(evals) - 1  # the last good evaluation: where the run of val-loss rises ending now began
    while first > 0 and evals[first]["val_loss"] > evals[first - 1]["val_loss"]:
        first -= 1
    last = evals[first:]
    losses = [e["val_loss"] for e in last]
    trains = [e["train_loss"] for e in last]
    if len(last) > patience and None not in trains and trains[-1] < trains[0]:
        start = last[0]
        return OverfittingSignal(
            "val_loss_rising",
            start["epoch"],
            start["step"],
            evals[-1]["step"],
            f"val loss rose for {len(last) - 1} evaluations ({losses[0]:.4g} -> {losses[-1]:.4g}) while the training "
            f"loss fell ({trains[0]:.4g} -> {trains[-1]:.4g})",
        )
    values = [(i, e["metric"]) for i, e in enumerate(evals) if e["metric"] is not None]
    if len(values) > patience:
        pick = max if greater_is_better else min
        best_index, best = pick(values, key=lambda iv: iv[1])
        after = [v for i, v in values if i > best_index]
        margin = min_drop * abs(best)  # a plateau's noise is not a fall
        worse = (lambda v: v < best - margin) if greater_is_better else (lambda v: v > best + margin)
        if len(after) >= patience and all(worse(v) for v in after[-patience:]):
            start = evals[best_index]
            name = metric_key.removeprefix("eval_")
            return OverfittingSignal(
                "metric_falling",
                start["epoch"],
                start["step"],
                evals[-1]["step"],
                f"{name} peaked at {best:.4g} and has been worse for {len(after)} evaluations since "
                f"(now {after[-1]:.4g})",
            )
    return None


class OverfittingWatch(TrainerCallback):
    """Checks after every evaluation and keeps the run's *current* state: a signal that a later evaluation
    undoes (the metric reaching a new best) is cleared, so the summary never reports a peak the run has since
    passed. Each kind of signal is warned about once per run (a trend that goes on, or starts again from a
    later evaluation, is not news) and logged to W&B when a run is active."""

    def __init__(self, metric: str, greater_is_better: bool, patience: int = 2) -> None:
        self.metric_key = metric if metric.startswith("eval_") else f"eval_{metric}"
        self.greater_is_better, self.patience = greater_is_better, patience
        self.signal: OverfittingSignal | None = None
        self._reported: set[str] = set()

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        history = list(state.log_history)
        if metrics and (
            not history or history[-1].get("step") != state.global_step or "eval_loss" not in history[-1]
        ):
            history.append({**metrics, "step": state.global_step, "epoch": state.epoch})
        signal = detect(history, self.metric_key, self.greater_is_better, self.patience)
        self.signal = signal
        if signal is None:
            return control
        if signal.kind not in self._reported and state.is_world_process_zero:
            self._reported.add(signal.kind)
            logger.warning(
                "overfitting: %s, since epoch %s (step %d)",
                signal.detail,
                signal.since_epoch,
                signal.since_step,
            )
            _to_wandb(signal, state.global_step)
        return control


def _to_wandb(signal: OverfittingSignal, step: int) -> None:
    """On the Trainer's step axis, so the marker lines up with the loss charts."""
    from trainers.reporting.wandb import active_wandb

    wandb = active_wandb()
    if wandb is None:
        return
    wandb.log(
        {
            "train/global_step": step,
            "overfitting/since_epoch": signal.since_epoch or 0.0,
            f"overfitting/{signal.kind}": 1,
        }
    )
    wandb.run.summary["overfitting"] = signal.to_dict()
