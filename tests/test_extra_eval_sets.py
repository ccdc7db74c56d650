"""Extra validation sets and the test split (`data.extra_val`, `data.test`) on the shipped ViT LoRA demo.

The extra set and the test split are the val set itself, so what each reports can be checked exactly: the
extra set's metrics equal the target set's at every evaluation, and the test split, evaluated once at the
end with the best model, equals the best epoch's validation.
"""

from __future__ import annotations

import json

import pytest

from conftest import ROOT
from trainers.errors import RecipeError
from trainers.recipe import load_recipe
from trainers.recipe.checks import check_task
from trainers.run import run_training

VAL = str(ROOT / "data" / "tiny_classes" / "val")
OVERRIDES = [
    "training.epochs=3",
    "data.max_train_samples=64",
    "training.resume=never",
    "reporting.plots=false",
]


def vit_recipe(tmp_path, *extra: str):
    recipe = load_recipe(
        str(ROOT / "recipes" / "vit_lora.py"), [f"output_dir={tmp_path}", *OVERRIDES, *extra], demo=True
    )
    return recipe


def test_extra_set_metrics_every_epoch_and_the_test_split_once_with_the_best_model(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    recipe = vit_recipe(tmp_path)
    recipe.data.extra_val = {"again": VAL}
    recipe.data.test = VAL
    recipe.early_stopping.metric = "again_accuracy"  # early stopping names the set it watches
    check_task(recipe)
    summary = run_training(recipe)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] > 0 for r in records] == [False, True, True, True]  # before training, 3 epochs
    for record in records:
        metrics = record["eval"]
        assert metrics["again_accuracy"] == metrics["accuracy"]
        assert metrics["again_mean_class_accuracy"] == metrics["mean_class_accuracy"]
        assert "again_loss" not in metrics  # the Trainer's loss is the target set's only
    assert summary["early_stopping"]["metric"] == "eval_again_accuracy"
    best = summary["best_metrics"]
    assert (
        summary["test_metrics"]["test_accuracy"]
        == best["accuracy"]
        == max(r["eval"]["accuracy"] for r in records[1:])  # never the evaluation before training
    )
    assert set(summary["data"]) >= {"train", "val", "val_again", "test"}
    for name in ("again", "test"):
        assert (tmp_path / "eval" / name / "confusion_matrix.json").is_file()


@pytest.mark.parametrize(
    "metric, expected",
    [
        ("again_acuracy", "again_<metric>"),
        ("again_loss", "again_<metric>"),
        ("other_accuracy", "Did you mean 'accuracy'"),
    ],
)
def test_a_metric_of_an_unknown_set_or_one_the_set_does_not_produce_is_a_recipe_error(
    tmp_path, metric, expected
):
    recipe = vit_recipe(tmp_path)
    recipe.data.extra_val = {"again": VAL}
    recipe.early_stopping.metric = metric
    with pytest.raises(RecipeError) as error:
        check_task(recipe)
    assert "early_stopping.metric" in str(error.value) and expected in str(error.value), str(error.value)
