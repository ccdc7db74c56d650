"""A fingerprint of the weights a run started from: per parameter, its size and L2 norm.

`trainers.run` writes it (`start_weights.json`) right after loading the model, before freezing or LoRA.
`trainers.analysis.param_change` rebuilds the start (the tiny demo model from its spec and seed, or the
hub / local model) and checks it against this file before measuring how far training moved each module, so
a base that is not the run's start is refused instead of reported. A few numbers per tensor, not the weights:
the run dir stays the size it was. Skipped where the model is partitioned (ZeRO-3) or quantized.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

START_WEIGHTS = "start_weights.json"


def fingerprint(model: Any) -> dict[str, list[float]]:
    """{parameter name: [numel, L2 norm]} (a tied tensor once, under its first name)."""
    import torch

    return {
        name: [p.numel(), float(torch.linalg.vector_norm(p.detach().double()))]
        for name, p in model.named_parameters()
    }


def record(model: Any, output_dir: Path) -> bool:
    """Write the fingerprint of a freshly loaded model; False (nothing written) when it cannot be read whole."""
    from trainers.zero3 import is_partitioned

    params = list(model.parameters())
    if any(is_partitioned(p) for p in params) or any(not p.dtype.is_floating_point for p in params):
        return False
    (output_dir / START_WEIGHTS).write_text(json.dumps(fingerprint(model)) + "\n")
    return True


def mismatches(model: Any, run_dir: Path, rtol: float = 1e-6) -> list[str] | None:
    """Parameters whose size or norm differ from the recorded start (None: the run recorded nothing)."""
    path = run_dir / START_WEIGHTS
    if not path.is_file():
        return None
    recorded = json.loads(path.read_text())
    current = fingerprint(model)
    wrong = sorted(set(recorded) ^ set(current))
    for name in set(recorded) & set(current):
        (n0, norm0), (n1, norm1) = recorded[name], current[name]
        if n0 != n1 or abs(norm0 - norm1) > rtol * max(abs(norm0), 1e-12):
            wrong.append(name)
    return sorted(wrong)
