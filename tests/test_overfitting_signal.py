"""The overfitting signal: val loss rising while the training loss falls, or the watched metric peaked and
falling, each reported once with the epoch where it began; nothing while the run still improves."""

from __future__ import annotations

import logging
from types import SimpleNamespace

from trainers.callbacks.overfitting import OverfittingWatch, detect


def history(val_losses, train_losses, metric=None, steps_per_epoch=4):
    """A Trainer log history: per epoch, `steps_per_epoch` training-loss logs then one evaluation."""
    out, step = [], 0
    for epoch, (val, train) in enumerate(zip(val_losses, train_losses, strict=True), start=1):
        for _ in range(steps_per_epoch):
            step += 1
            out.append(
                {"loss": train, "step": step, "epoch": epoch - 1 + step % steps_per_epoch / steps_per_epoch}
            )
        entry = {"eval_loss": val, "step": step, "epoch": float(epoch)}
        if metric is not None:
            entry["eval_accuracy"] = metric[epoch - 1]
        out.append(entry)
    return out


def test_val_loss_rising_while_train_loss_falls_reports_where_it_began():
    h = history([1.0, 0.8, 0.7, 0.75, 0.9], [1.2, 0.9, 0.6, 0.4, 0.2])
    signal = detect(h, "eval_accuracy", greater_is_better=True, patience=2)
    assert signal is not None and signal.kind == "val_loss_rising"
    assert signal.since_epoch == 3.0 and signal.since_step == 12 and signal.detected_at_step == 20
    assert "0.7 -> 0.9" in signal.detail and "0.6 -> 0.2" in signal.detail
    # one rise is not yet a trend
    assert detect(h[:-5], "eval_accuracy", True, patience=2) is None


def test_no_signal_while_both_losses_fall_or_when_the_train_loss_rises_too():
    assert detect(history([1.0, 0.8, 0.7, 0.6], [1.2, 0.9, 0.6, 0.4]), "eval_accuracy", True) is None
    assert (
        detect(history([1.0, 0.8, 0.9, 1.0], [1.0, 0.9, 1.0, 1.1]), "eval_accuracy", True) is None
    )  # diverging


def test_the_watched_metric_peaking_and_falling():
    h = history([1.0, 0.9, 0.9, 0.9, 0.9], [1.0, 0.9, 0.8, 0.7, 0.6], metric=[0.5, 0.7, 0.8, 0.75, 0.72])
    signal = detect(h, "eval_accuracy", greater_is_better=True, patience=2)
    assert signal is not None and signal.kind == "metric_falling" and signal.since_epoch == 3.0
    assert "accuracy peaked at 0.8" in signal.detail
    # a plateau a hair below the best is not a fall (the demo: 1.428 best, 1.424 after)
    flat = history(
        [1.0, 0.9, 0.9, 0.9, 0.9], [1.0, 0.9, 0.8, 0.7, 0.6], metric=[1.2, 1.428, 1.426, 1.425, 1.424]
    )
    assert detect(flat, "eval_accuracy", greater_is_better=True, patience=2) is None
    # lower-is-better metrics: a minimum, then worse
    h2 = history([1.0, 0.9, 0.9, 0.9], [1.0, 0.9, 0.8, 0.7], metric=[0.5, 0.3, 0.4, 0.45])
    assert detect(h2, "eval_accuracy", greater_is_better=False, patience=2).since_epoch == 2.0


def test_the_callback_warns_once_and_keeps_the_signal(caplog):
    watch = OverfittingWatch("accuracy", greater_is_better=True, patience=2)
    h = history([1.0, 0.8, 0.7, 0.75, 0.9, 1.1], [1.2, 0.9, 0.6, 0.4, 0.2, 0.1])
    evals = [i for i, e in enumerate(h) if "eval_loss" in e]
    with caplog.at_level(logging.WARNING, logger="trainers.callbacks.overfitting"):
        for i in evals:
            state = SimpleNamespace(
                log_history=h[: i + 1],
                global_step=h[i]["step"],
                epoch=h[i]["epoch"],
                is_world_process_zero=True,
            )
            watch.on_evaluate(None, state, None, metrics=h[i])
    assert watch.signal is not None and watch.signal.since_epoch == 3.0
    warnings = [r for r in caplog.records if "overfitting" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]  # the same trend is reported once


def _feed(watch, h):
    for i in [i for i, e in enumerate(h) if "eval_loss" in e]:
        state = SimpleNamespace(
            log_history=h[: i + 1], global_step=h[i]["step"], epoch=h[i]["epoch"], is_world_process_zero=True
        )
        watch.on_evaluate(None, state, None, metrics=h[i])


def test_a_peak_the_run_later_passes_is_not_reported_at_the_end(caplog):
    """The metric falls after a peak (a warning), then reaches a new best: the summary's signal is cleared, so
    the end-of-run line never names a peak below the best the run reports."""
    watch = OverfittingWatch("accuracy", greater_is_better=True, patience=2)
    metric = [0.1, 0.4, 0.2, 0.15, 0.5, 0.6]
    with caplog.at_level(logging.WARNING, logger="trainers.callbacks.overfitting"):
        _feed(watch, history([1.0] * 6, [1.0, 0.9, 0.8, 0.7, 0.6, 0.5], metric=metric))
    assert [r.getMessage() for r in caplog.records if "overfitting" in r.getMessage()][0].startswith(
        "overfitting: accuracy peaked at 0.4"
    )
    assert watch.signal is None


def test_a_trend_that_restarts_from_a_later_evaluation_is_warned_once(caplog):
    """Val loss rising from epoch 2, a dip, then rising again from epoch 5: one warning, not one per start."""
    watch = OverfittingWatch("accuracy", greater_is_better=True, patience=2)
    val = [1.0, 0.8, 0.9, 1.0, 0.7, 0.8, 0.9, 1.0]
    train = [1.2, 1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4]
    with caplog.at_level(logging.WARNING, logger="trainers.callbacks.overfitting"):
        _feed(watch, history(val, train))
    assert len([r for r in caplog.records if "overfitting" in r.getMessage()]) == 1
    assert watch.signal is not None and watch.signal.since_epoch == 5.0


def test_the_last_overfitting_line_names_the_epoch_and_value_best_holds():
    import importlib.util

    from conftest import ROOT

    spec = importlib.util.spec_from_file_location("launch_cli", ROOT / "launch.py")
    launch = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(launch)
    summary = {
        "global_steps": 60,
        "best_metric": {"name": "eval_map_50", "value": 0.178},
        "best_epoch": 14.0,
        "overfitting": {"detail": "val loss rose for 2 evaluations (0.7 -> 0.9)", "since_epoch": 12.0},
    }
    lines = launch.final_lines(summary, "outputs/x")
    [line] = [ln for ln in lines if ln.startswith("overfitting:")]
    assert line.endswith("since epoch 12.0; best/ holds epoch 14 (eval_map_50 = 0.178)")
