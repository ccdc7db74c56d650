"""Per-epoch metrics as JSON lines: one record per evaluation, written by the main process.

The task's `baseline_*` metrics (what a constant caption scores) and `distinct_predictions` are kept out of
`eval`, in fields of their own: they describe the prior and the model's output, they are not scores of it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

BASELINE = "baseline_"  # metric-name prefix of a task's no-model baseline scores
DISTINCT = "distinct_predictions"


class EpochMetricsLog(TrainerCallback):
    """Appends {epoch, step, train_loss, eval metrics, distinct predictions, baseline, group LRs, trainable
    params, epoch time} to a JSONL file."""

    def __init__(self, path: Path, count_trainable: Callable[[], int] | None = None) -> None:
        self.path = Path(path)
        self.count_trainable = count_trainable
        self.epoch_seconds: list[float] = []
        self._epoch_started: float | None = None

    def on_epoch_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        self._epoch_started = time.perf_counter()

    def on_epoch_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if self._epoch_started is not None:
            self.epoch_seconds.append(time.perf_counter() - self._epoch_started)

    def on_evaluate(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, metrics=None, **kwargs
    ):
        if not state.is_world_process_zero:
            return
        optimizer = kwargs.get("optimizer")
        scores = {k.removeprefix("eval_"): v for k, v in (metrics or {}).items()}
        baseline = {k.removeprefix(BASELINE): scores.pop(k) for k in list(scores) if k.startswith(BASELINE)}
        distinct = scores.pop(DISTINCT, None)
        record = {
            "epoch": round(state.epoch or 0.0, 4),
            "step": state.global_step,
            "train_loss": _mean_train_loss_since_last_eval(state.log_history),
            "eval": scores,
            "distinct_predictions": distinct,
            "baseline": baseline or None,
            "lr": {g.get("name", str(i)): g["lr"] for i, g in enumerate(optimizer.param_groups)}
            if optimizer
            else {},
            "trainable_params": self.count_trainable() if self.count_trainable else None,
            "epoch_seconds": self.epoch_seconds[-1] if self.epoch_seconds else None,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")


def _mean_train_loss_since_last_eval(history: list[dict]) -> float | None:
    losses: list[float] = []
    for entry in reversed(history):
        if "loss" in entry:
            losses.append(entry["loss"])
        elif any(k.startswith("eval_") for k in entry) and losses:
            break
    return sum(losses) / len(losses) if losses else None
