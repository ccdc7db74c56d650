"""Metric-based early stopping: stops at the right evaluation, keeps and restores the best checkpoint."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_recipe
from trainers.callbacks.early_stopping import MetricEarlyStopping
from trainers.errors import RecipeError
from trainers.recipe import EarlyStopping, mean
from trainers.run import complete_run, setup_run


class ScriptedEvaluator:
    """Returns a fixed sequence of metrics, one per evaluation."""

    def __init__(self, sequence: list[dict[str, float]]):
        self.sequence = sequence
        self.calls = 0

    def __call__(self, trainer):
        metrics = self.sequence[self.calls]
        self.calls += 1
        return metrics

    def examples(self, n: int = 10) -> list:
        return []

    def close(self) -> None:
        pass


@pytest.mark.parametrize(
    ("values", "patience", "mode", "stop_after"),
    [
        ([0.1, 0.3, 0.2, 0.25, 0.9], 2, "max", 4),  # best at eval 2; evals 3 and 4 don't improve
        ([0.1, 0.2, 0.3, 0.4], 1, "max", None),  # always improving: never stops
        ([5.0, 4.0, 4.5, 3.0, 3.5, 3.2], 2, "min", 6),  # best at eval 4; evals 5 and 6 don't improve
    ],
)
def test_decision_rule(values, patience, mode, stop_after):
    stopper = MetricEarlyStopping("x", patience=patience, mode=mode)
    stops = [stopper.decide(list(enumerate(values[: i + 1]))).should_stop for i in range(len(values))]
    first_stop = stops.index(True) + 1 if True in stops else None
    assert first_stop == stop_after


def test_min_delta_counts_small_gains_as_no_improvement():
    stopper = MetricEarlyStopping("x", patience=2, mode="max", min_delta=0.05)
    decision = stopper.decide([(1, 0.50), (2, 0.52), (3, 0.54)])
    assert decision.best_step == 1 and decision.should_stop


def test_training_stops_at_the_right_epoch_and_keeps_the_best_checkpoint(tmp_path):
    recipe = tiny_recipe(tmp_path / "run", epochs=8)
    recipe.early_stopping = EarlyStopping(metric=mean("a", "b", name="score"), patience=2, mode="max")
    ctx = setup_run(recipe)
    # composite score per epoch: 0.2, 0.6 (best), 0.4, 0.5 -> patience 2 exhausted after epoch 4; before
    # training 0.95, above them all: neither the best checkpoint nor the patience count takes it
    ctx.trainer.evaluator = ScriptedEvaluator(
        [
            {"a": 0.95, "b": 0.95},
            {"a": 0.1, "b": 0.3},
            {"a": 0.5, "b": 0.7},
            {"a": 0.4, "b": 0.4},
            {"a": 0.5, "b": 0.5},
            {"a": 0.9, "b": 0.9},
        ]
    )
    # remember the weights at the end of each epoch to compare with what is kept
    snapshots: dict[int, dict[str, torch.Tensor]] = {}
    from transformers import TrainerCallback

    class Remember(TrainerCallback):
        def on_epoch_end(self, args, state, control, model=None, **kwargs):
            snapshots[state.global_step] = {k: v.detach().clone() for k, v in model.state_dict().items()}

    ctx.trainer.add_callback(Remember())
    summary = complete_run(ctx)

    steps_per_epoch = 4
    assert ctx.trainer.evaluator.calls == 5
    assert summary["global_steps"] == 4 * steps_per_epoch
    assert summary["early_stopping"]["stopped_at_step"] == 4 * steps_per_epoch
    assert summary["best_metric"] == {
        "name": "score",
        "value": pytest.approx(0.6),
        "at_start": pytest.approx(0.95),
    }
    assert summary["best_checkpoint"].endswith(f"checkpoint-{2 * steps_per_epoch}")

    best_weights = snapshots[2 * steps_per_epoch]
    saved = load_file(str(tmp_path / "run" / "best" / "model.safetensors"))
    for name, tensor in saved.items():
        assert torch.equal(tensor, best_weights[name]), name
    # and the in-memory model was restored to the best epoch too
    live = ctx.trainer.model.state_dict()
    assert all(torch.equal(live[n], best_weights[n]) for n in saved)
    # epoch 4 differs from the best epoch, so the comparison above can fail
    assert any(not torch.equal(snapshots[4 * steps_per_epoch][n], best_weights[n]) for n in saved)


def test_a_missing_metric_fails_loudly(tmp_path):
    recipe = tiny_recipe(tmp_path / "run", epochs=2)
    recipe.early_stopping = EarlyStopping(metric="bleu_9", patience=2)
    ctx = setup_run(recipe)
    with pytest.raises(RecipeError, match="eval_bleu_9"):
        complete_run(ctx)
