"""Checks at recipe load and before any model: metric names against the task's list, data paths on disk.

A wrong metric name used to pass `--dry-run`, train an epoch and die with a ValueError; a missing data folder
used to be found only after the model was loaded (or downloaded, 1 GB for the real recipe).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from test_rerun_end_to_end import launch_in_process

from conftest import ROOT, SHAPES, tiny_recipe
from trainers.errors import RecipeError
from trainers.recipe import EarlyStopping, load_recipe, mean
from trainers.recipe.checks import check_task
from trainers.tasks.interface import check_metric_names
from trainers.tasks.registry import get_task

PROGRESSIVE = "recipes/blip_progressive.py"


def test_the_check_takes_the_tasks_names_and_suggests_the_closest():
    recipe = tiny_recipe(Path("/unused"))
    task = get_task(recipe.data)
    recipe.evaluation.metrics = ("rouge_l", "cider_d")
    check_metric_names(
        task, recipe.evaluation, {"early_stopping.metric": ("rouge_l", "eval_cider_d", "loss")}
    )
    with pytest.raises(
        RecipeError,
        match=r"early_stopping.metric: 'rouge-l' is not a metric the captioning task "
        r"produces; it produces rouge_l, cider_d, .* Did you mean 'rouge_l'\?",
    ):
        check_metric_names(task, recipe.evaluation, {"early_stopping.metric": "rouge-l"})


def test_captioning_names_come_from_the_metrics_module_and_each_one_scores():
    from trainers.metrics import captions as metrics

    names = get_task(tiny_recipe(Path("/unused")).data).metric_names()[:4]  # all it can compute, unlisted
    assert names == metrics.SUPPORTED_METRICS == ("meteor", "rouge_l", "cider_d", "bleu_4")
    for name in names:
        assert metrics.CaptionScorer((name,)).metrics == (name,)


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        (
            ["evaluation.metrics=bleu", "early_stopping=none"],
            (
                "evaluation.metrics: 'bleu'",
                "(did you mean 'bleu_4'?)",
                "supported: meteor, rouge_l, cider_d, bleu_4",
                "evaluation.metrics=bleu_4",
            ),
        ),
        (
            ["evaluation.metrics=meteor,rouge-l", "early_stopping=none"],
            ("'rouge-l'", "did you mean 'rouge_l'", "evaluation.metrics=meteor,rouge_l"),
        ),
        (["evaluation.metrics=", "early_stopping=none"], ("evaluation.metrics is empty",)),
        (
            ["early_stopping.metric=meteorr"],
            (
                "early_stopping.metric: 'meteorr' is not a metric the captioning task",
                "Did you mean 'meteor'?",
                "loss",
            ),
        ),
        (
            ["early_stopping.metric=bleu_4"],
            (
                "'bleu_4' is not a metric the captioning task produces",
                "evaluation.metrics=meteor,rouge_l,cider_d,bleu_4",
            ),
        ),
    ],
)
def test_metric_names_fail_at_load(overrides, fragments):
    with pytest.raises(RecipeError) as info:
        load_recipe(ROOT / PROGRESSIVE, overrides, demo=True)
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))


def test_a_part_of_a_composite_metric_is_checked_too(tmp_path):
    recipe = tmp_path / "composite.py"
    recipe.write_text(
        textwrap.dedent(f"""
        from trainers.models.blip import TinyBlipSpec
        from trainers.recipe import CaptionData, EarlyStopping, Evaluation, Model, Recipe, mean

        recipe = Recipe(
            name="composite",
            model=Model(id="tiny", family="blip", demo=TinyBlipSpec(), use_demo_model=True),
            data=CaptionData(train="{SHAPES}/train.json", val="{SHAPES}/val.json", images="{SHAPES}/images"),
            evaluation=Evaluation(metrics=("rouge_l", "cider_d")),
            early_stopping=EarlyStopping(metric=mean("rouge_l", "cidr_d", name="score"), patience=2),
        )
    """)
    )
    with pytest.raises(
        RecipeError,
        match=r"early_stopping.metric \(score = mean of \['rouge_l', 'cidr_d'\]\): "
        r"'cidr_d' is not a metric.*Did you mean 'cider_d'",
    ):
        load_recipe(recipe)


def test_valid_names_pass():
    r = load_recipe(
        ROOT / PROGRESSIVE,
        ["evaluation.metrics=meteor,rouge_l,cider_d,bleu_4", "early_stopping.metric=eval_loss"],
        demo=True,
    )
    assert r.evaluation.metrics == ("meteor", "rouge_l", "cider_d", "bleu_4")
    r.early_stopping = EarlyStopping(metric=mean("bleu_4", "loss"))
    check_task(r)


def test_dry_run_catches_a_wrong_metric_before_the_model(monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr("trainers.plan.load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    result = launch_in_process(
        PROGRESSIVE, "--demo", "evaluation.metrics=bleu", "early_stopping=none", "--dry-run"
    )
    assert result.returncode == 2
    assert "did you mean 'bleu_4'" in result.stderr and "Traceback" not in result.stderr


def test_missing_data_stops_the_real_recipe_before_any_model_load_or_download(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setattr("trainers.models.hub.load_pretrained", lambda *a, **k: pytest.fail("model loaded"))
    monkeypatch.setattr("trainers.hub_probe.hub_reachable", lambda *a, **k: pytest.fail("hub probed"))
    result = launch_in_process(PROGRESSIVE, "--no-wandb", f"--output-dir={tmp_path / 'out'}")
    assert result.returncode == 2, result.stderr[-2000:]
    message = [line for line in result.stderr.splitlines() if line.startswith("error: ")][-1]
    for fragment in (
        "data.train 'data/captions/train.json' (caption file)",
        "data.val 'data/captions/val.json'",
        "data.images 'data/captions/images' (image directory)",
        f"read from {ROOT}",
        "before the model Salesforce/blip-image-captioning-base is loaded or downloaded",
        '{"0001.jpg": "a dog runs along the beach"}',
        "JSONL",
        "--demo",
        "data/shapes",
    ):
        assert fragment in message, (fragment, message)
    assert not (tmp_path / "out" / "recipe.json").exists()


def test_dry_run_with_missing_data_warns_in_the_plan_and_still_prints_it(monkeypatch):
    monkeypatch.chdir(ROOT)
    result = launch_in_process(PROGRESSIVE, "data.images=/nonexistent/images", "--dry-run")
    assert result.returncode == 0, result.stderr[-2000:]
    warning = [line for line in result.stdout.splitlines() if line.startswith("WARNING: data not found")]
    assert warning and "data.images '/nonexistent/images' (image directory)" in warning[0]
    assert "data.train 'data/captions/train.json'" in warning[0]
    assert "freeze map" in result.stdout  # the plan is still there


def test_the_training_path_checks_data_before_the_model(tmp_path, monkeypatch):
    from trainers.run import setup_run

    recipe = tiny_recipe(tmp_path / "out")
    recipe.data.val = str(tmp_path / "missing_val.json")
    monkeypatch.setattr("trainers.run.load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    with pytest.raises(RecipeError, match=r"data.val '.*missing_val.json' \(caption file\)"):
        setup_run(recipe)
