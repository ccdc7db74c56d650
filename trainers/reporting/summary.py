"""`training_summary.json`: what was trained, how it went, where the results are."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trainers.reporting.redact import redact


def write_json(path: Path, payload: Any) -> Path:
    """Write JSON atomically, secrets redacted: a reader never sees a half-written file or a token."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(redact(json.loads(json.dumps(payload, default=str))), indent=2) + "\n")
    os.replace(tmp, path)
    return path


START_STEP = 0  # the evaluation before the first optimizer step (`training.eval_on_start`)


def is_start_evaluation(entry: Mapping[str, Any]) -> bool:
    """The evaluation before training: where the run started. It is reported, never a candidate for the best
    checkpoint, an early stop, a plateau stage or an overfitting signal (nothing was trained yet)."""
    return entry.get("step") == START_STEP


def split_start(history: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """(the start evaluation or None, the evaluations after training began) of an `eval_history`."""
    start = history[0] if history and is_start_evaluation(history[0]) else None
    return start, [row for row in history if not is_start_evaluation(row)]


def eval_history(log_history: list[dict]) -> list[dict[str, Any]]:
    """Evaluation records (metric names without the `eval_` prefix), oldest first."""
    rows = []
    for entry in log_history:
        if any(k.startswith("eval_") for k in entry):
            row = {k.removeprefix("eval_"): v for k, v in entry.items() if k.startswith("eval_")}
            rows.append({"epoch": entry.get("epoch"), "step": entry.get("step"), **row})
    return rows


def baseline_report(baseline: Any, best: dict[str, Any] | None, metric: str) -> dict[str, Any] | None:
    """The task's no-model baseline next to the best evaluation: does the model beat the prior?

    `baseline` is the task's (`Task.baseline()`, with `to_dict()`); `None` when the task has none. `beats_baseline`
    compares the best checkpoint's `metric` with the baseline's (caption metrics: higher is better); `None` when
    the baseline has no such metric; False, with `why_not`, when the best evaluation gave one distinct prediction
    for every image (a constant output does not beat an image-blind baseline, whatever it scores).
    """
    if baseline is None:
        return None
    report = baseline.to_dict()
    model, prior = (best or {}).get(metric), report.get(metric)
    distinct = next(
        (best[name] for name in ("distinct_predictions", "distinct_answers") if name in (best or {})), None
    )
    report["model"] = {"metric": metric, "value": model, "distinct_predictions": distinct}
    report["beats_baseline"] = model > prior if model is not None and prior is not None else None
    if report["model"]["distinct_predictions"] == 1 and report["beats_baseline"]:
        # one output for every image ignores the image, whatever it scores: no model beats the prior that way
        report["beats_baseline"] = False
        report["why_not"] = (
            "the model gave one prediction for every validation image: it does not read the image"
        )
    return report
