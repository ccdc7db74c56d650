"""`training_summary.json`: what was trained, how it went, where the results are."""

from __future__ import annotations

import json
import os
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


def eval_history(log_history: list[dict]) -> list[dict[str, Any]]:
    """Evaluation records (metric names without the `eval_` prefix), oldest first."""
    rows = []
    for entry in log_history:
        if any(k.startswith("eval_") for k in entry):
            row = {k.removeprefix("eval_"): v for k, v in entry.items() if k.startswith("eval_")}
            rows.append({"epoch": entry.get("epoch"), "step": entry.get("step"), **row})
    return rows
