"""A run resumed from a checkpoint inside a logging window (logging_steps 3, checkpoint at step 4) logs the same
training loss as the uninterrupted run: the window's loss so far travels in the checkpoint, one file per rank
(`loss_window_rank<N>.json`, each rank's own sum, as the Trainer gathers them at the next logging step)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from conftest import tiny_recipe
from trainers.run import run_training

SETTINGS = dict(epochs=2, logging_steps=3, save_steps=2, save_total_limit=None, resume="auto")  # 8 steps


def _logged(out: Path) -> tuple[list[tuple[int, float]], list[float], float]:
    state = json.loads((out / "checkpoints" / "checkpoint-8" / "trainer_state.json").read_text())
    losses = [(e["step"], e["loss"]) for e in state["log_history"] if "loss" in e]
    epochs = [json.loads(line)["train_loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    return losses, epochs, json.loads((out / "training_summary.json").read_text())["train_loss"]


def test_a_resume_inside_a_logging_window_logs_what_the_uninterrupted_run_logs(tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    run_training(tiny_recipe(straight, **SETTINGS))
    run_training(tiny_recipe(resumed, **SETTINGS))
    # the second run stopped after checkpoint-4 (step 4 lies in the window 4..6 that logs at step 6)
    for name in ("checkpoint-6", "checkpoint-8"):
        shutil.rmtree(resumed / "checkpoints" / name)
    shutil.rmtree(resumed / "best")
    (resumed / "training_summary.json").unlink()
    run_training(tiny_recipe(resumed, **SETTINGS))
    expected, got = _logged(straight), _logged(resumed)
    assert [step for step, _ in got[0]] == [3, 6]
    assert got == expected  # bit for bit: the step-6 window mean, the per-epoch means, the summary
