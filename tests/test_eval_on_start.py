"""The evaluation before training (`training.eval_on_start`, on by default): every run records where it started
(metrics.jsonl's epoch-0 row, the summary's `start_metrics` and `best_metric.at_start`, the plot, the last
line), it trains exactly as a run without it, and no decision counts it: not the best checkpoint, not early
stopping or a plateau stage, not the overfitting watch."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

import launch
from conftest import tiny_recipe
from trainers.callbacks.early_stopping import MetricEarlyStopping
from trainers.callbacks.overfitting import detect
from trainers.reporting.plots import read_panels
from trainers.reporting.summary import eval_history, split_start
from trainers.run import run_training, setup_run

TIMING = ("eval_runtime", "eval_samples_per_second", "eval_steps_per_second")


def _rows(out) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _scores(row: dict) -> dict:
    return {k: v for k, v in row["eval"].items() if f"eval_{k}" not in TIMING}


def test_a_run_is_evaluated_before_its_first_step_and_trains_exactly_as_without_it(tmp_path):
    plotted = tiny_recipe(tmp_path / "on", epochs=3)
    plotted.reporting.plots = True
    on = run_training(plotted)
    off = run_training(tiny_recipe(tmp_path / "off", epochs=3, eval_on_start=False))
    on_rows, off_rows = _rows(tmp_path / "on"), _rows(tmp_path / "off")

    start = on_rows[0]
    assert (start["epoch"], start["step"], start["train_loss"]) == (0, 0, None)
    assert [r["step"] for r in on_rows[1:]] == [r["step"] for r in off_rows] == [4, 8, 12]
    assert off_rows[0]["step"] > 0  # turned off: no start row
    # the same training, evaluation by evaluation: the start evaluation put back every random state it drew from
    assert [_scores(r) for r in on_rows[1:]] == [_scores(r) for r in off_rows]
    assert [r["train_loss"] for r in on_rows[1:]] == [r["train_loss"] for r in off_rows]
    assert on["train_loss"] == off["train_loss"]

    assert on["start_metrics"]["step"] == 0 and off["start_metrics"] is None
    assert on["best_metric"]["at_start"] == start["eval"]["rouge_l"]
    assert off["best_metric"]["at_start"] is None
    assert on["best_epoch"] == off["best_epoch"] > 0
    assert on["best_metric"]["value"] == off["best_metric"]["value"]

    line = launch.final_lines(on, str(tmp_path / "on"))[0]
    assert f"before training {start['eval']['rouge_l']:.4g}" in line
    assert "image-blind baseline" in line
    headline = read_panels(tmp_path / "on" / "plots" / "val_metrics.png")[0]
    assert headline["title"].startswith("rouge_l")


def test_the_start_evaluation_leaves_every_random_state_as_it_was(tmp_path):
    """The Trainer's eval loader draws its base seed from torch's generator: without putting it back, dropout
    and data order after a start evaluation would differ from a run without one (this tiny model has neither)."""
    import random

    import numpy as np
    import torch

    ctx = setup_run(tiny_recipe(tmp_path / "run"))
    before = torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy()
    metrics = ctx.trainer.evaluate()
    assert "eval_rouge_l" in metrics and ctx.trainer.state.global_step == 0
    assert torch.equal(torch.get_rng_state(), before[0])
    assert random.getstate() == before[1] and (np.random.get_state()[1] == before[2]).all()


def test_a_resumed_run_is_not_evaluated_again_at_its_start(tmp_path):
    """Stopped after epoch 1 and continued to epoch 2: one start row (step 0), kept from the first attempt."""
    out = tmp_path / "run"
    run_training(tiny_recipe(out, epochs=1, resume="auto", lr_scheduler="constant"))
    summary = run_training(tiny_recipe(out, epochs=2, resume="auto", lr_scheduler="constant"))
    rows = _rows(out)
    assert [r["step"] for r in rows] == [0, 4, 8]
    assert summary["start_metrics"]["step"] == 0


def _history(values: list[float]) -> list[dict]:
    """A log history: the start evaluation (step 0), then one evaluation per epoch of 4 steps."""
    return [
        {"eval_loss": 1.0, "eval_score": v, "step": 4 * i, "epoch": float(i)} for i, v in enumerate(values)
    ]


def test_the_best_evaluation_is_never_the_start_one():
    start, trained = split_start(eval_history(_history([0.9, 0.2, 0.4, 0.3])))
    assert start["score"] == 0.9 and [r["step"] for r in trained] == [4, 8, 12]
    assert split_start(eval_history(_history([0.9, 0.2])[1:])) == (
        None,
        eval_history(_history([0.9, 0.2])[1:]),
    )


@pytest.mark.parametrize("values", [[0.9, 0.2, 0.3, 0.4], [0.9, 0.2, 0.2]])
def test_early_stopping_counts_no_evaluation_from_the_start_one(values):
    """A start that scored higher than every trained evaluation would otherwise stop the run at patience 2."""
    stopper = MetricEarlyStopping("score", patience=2, mode="max", min_delta=0.0)
    history = _history(values)
    for i, entry in enumerate(history):
        state = SimpleNamespace(log_history=history[: i + 1], global_step=entry["step"])
        control = SimpleNamespace(should_training_stop=False)
        stopper.on_evaluate(None, state, control, metrics=entry)
        assert not control.should_training_stop, f"stopped at step {entry['step']}"


def test_the_overfitting_watch_does_not_take_the_start_for_a_peak():
    history = []
    for entry in _history([0.9, 0.2, 0.3, 0.4]):
        if entry["step"]:
            history.append({"loss": 1.0 / entry["step"], "step": entry["step"] - 1})
        history.append(entry)
    assert detect(history, "eval_score", greater_is_better=True, patience=2) is None
