"""The task contract, checked for every task in `trainers.tasks.registry.TASKS`: a task added to the registry
(with a demo recipe in recipes/) is covered here without editing this file.

Each task builds from its demo recipe's data with a tiny random model; `score` over a few of its own
predictions produces the metric names it declares, the best metric among them; the missing-data check names a
missing path; and a bad line in a JSONL or COCO file reaches the recipe's bad-sample policy.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import shutil
from pathlib import Path

import pytest
import torch

from conftest import ROOT
from trainers.data_policy import DataError
from trainers.recipe import load_recipe
from trainers.recipe.config import Recipe
from trainers.tasks.interface import RunHooks, Task, TaskData, load_task, produces
from trainers.tasks.registry import TASKS

FEW = 8  # val items predicted and scored per task (recall@10 needs 10 captions to rank)


@functools.cache
def demo_recipes() -> tuple[Recipe, ...]:
    return tuple(load_recipe(path, demo=True) for path in sorted((ROOT / "recipes").glob("*.py")))


def demo_recipe(task: Task) -> Recipe:
    """The first recipe in recipes/ whose data class is the task's, loaded with `demo=True`."""
    found = [r for r in demo_recipes() if type(r.data) is task.data_config]
    assert found, f"no recipe in recipes/ has data={task.data_config.__name__}(...): add a demo recipe"
    return found[0]


def in_place(recipe: Recipe, **data: object) -> Recipe:
    """A copy of `recipe` with data fields replaced; relative paths stay readable from the project root."""
    return dataclasses.replace(recipe, data=dataclasses.replace(recipe.data, **data))


@pytest.fixture(autouse=True)
def _project_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # the demo recipes' data paths are relative to it


@pytest.mark.parametrize("name", sorted(TASKS))
def test_the_task_names_itself_once_and_implements_the_required_hooks(name):
    task = load_task(TASKS[name])
    assert task.name == name == task.data_config.task
    assert task.data_config.eval_config is task.eval_config
    missing = [hook for hook in RunHooks.REQUIRED if getattr(type(task), hook) is getattr(Task, hook)]
    assert missing == [], f"{type(task).__name__} does not implement {missing}"


@functools.cache
def predicted(name: str) -> tuple[Task, Recipe, TaskData, dict[int, object]]:
    """The task built from its demo recipe's data (FEW val items) and a tiny random model's predictions on them."""
    from trainers.models.registry import get_family

    task = load_task(TASKS[name])
    recipe = demo_recipe(task)
    recipe = in_place(recipe, max_val_samples=FEW)
    if name == "captioning":  # METEOR starts a java process: the other metrics keep this fast
        recipe.evaluation = dataclasses.replace(recipe.evaluation, metrics=("rouge_l", "cider_d"))
    family = get_family(recipe.model.family)
    torch.manual_seed(0)
    model, processor = family.build_tiny()(recipe.model.demo, seed=0, **task.model_kwargs(recipe))
    data = task.build(recipe, processor)
    batch = data.eval_collator([data.val[i] for i in range(len(data.val))])
    model.eval()
    with torch.no_grad():
        predictions = dict(enumerate(task.predict(model, batch)))
    return task, recipe, data, predictions


@pytest.mark.parametrize("name", sorted(TASKS))
def test_the_task_builds_from_its_demo_data_and_scores_the_metrics_it_declares(name):
    task, recipe, data, predictions = predicted(name)
    assert len(data.train) > 0 and len(data.val) == FEW
    assert len(predictions) == FEW
    scores = task.score(predictions, data.val)
    task.close()
    declared = task.metric_names(recipe.evaluation)
    assert set(declared) <= set(scores), f"declared but not produced: {set(declared) - set(scores)}"
    # `baseline_*`: the no-model baseline reported beside the scores, not a metric to select checkpoints by
    unknown = [
        m for m in scores if not m.startswith("baseline_") and not produces(task, m, recipe.evaluation)
    ]
    assert unknown == [], f"produced but not accepted by the metric-name check: {unknown}"
    best, _greater = task.best_metric(recipe.evaluation)
    assert best in scores


@pytest.fixture(scope="module")
def offline_tables(tmp_path_factory) -> tuple[dict[str, list], object]:
    """Every task's prediction table (`table_rows` → `trainers.reporting.wandb.prediction_table`) logged into
    one offline W&B run, as a run logs it after each evaluation, then read back from the run file."""
    import os

    import wandb
    from wandb_records import read_run

    from trainers.reporting.wandb import prediction_table

    directory = tmp_path_factory.mktemp("wandb_tables")
    rows = {name: predicted(name)[0].table_rows(predicted(name)[3], predicted(name)[2].val) for name in TASKS}
    previous = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("WANDB_")}
    os.environ.update(WANDB_DATA_DIR=str(directory / "data"), WANDB_SILENT="true")
    try:
        run = wandb.init(mode="offline", dir=str(directory), project="tables")
        for name, task_rows in rows.items():
            if task_rows:
                run.log({f"predictions/{name}": prediction_table(task_rows)})
        run.finish()
        wandb.teardown()  # the service process writes the run file: wait for it to exit
    finally:
        for key in [k for k in os.environ if k.startswith("WANDB_")]:
            del os.environ[key]
        os.environ.update(previous)
    (run_file,) = (directory / "wandb").glob("offline-run-*/run-*.wandb")
    return rows, read_run(run_file)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_task_logs_a_prediction_table_to_wandb(name, offline_tables):
    rows, run = offline_tables
    assert rows[name], f"{name}: table_rows gave no rows, so no W&B prediction table is logged"
    table, staged = run.table(f"predictions/{name}")
    assert table["columns"][:3] == ["image", "prediction", "target"]
    assert len(table["data"]) == len(rows[name])
    images = [row[0] for row in table["data"]]
    assert all(cell["_type"] == "image-file" and Path(staged[cell["path"]]).is_file() for cell in images)
    assert [row[1:3] for row in table["data"]] == [[r.prediction, r.target] for r in rows[name]]
    assert all(row[2] for row in table["data"])  # the truth is always shown (a prediction may be empty)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_the_missing_data_check_names_the_missing_path(name, tmp_path):
    task = load_task(TASKS[name])
    recipe = demo_recipe(task)
    assert task.missing_data(recipe) == []
    gone = str(tmp_path / "nowhere" / Path(str(recipe.data.train)).name)
    broken = in_place(recipe, train=gone)
    missing = task.missing_data(broken)
    assert len(missing) == 1 and missing[0].startswith(f"data.train {gone!r}")
    assert gone in task.missing_data_message(broken, missing, "")


def _with_a_bad_record(source: Path, out: Path) -> Path:
    """A copy of a record file with one bad record: a line that is not JSON (JSONL), an image entry without a
    file name and an annotation of an image that does not exist (COCO JSON), or a caption that is not text
    (an `{image: caption}` JSON)."""
    out = out / source.name
    if source.suffix == ".jsonl":
        out.write_text(source.read_text() + "{not json\n")
        return out
    payload = json.loads(source.read_text())
    if "annotations" in payload:
        payload["images"].append({"id": 987654})
        payload["annotations"].append(
            {"id": 987654, "image_id": 987654, "category_id": 1, "bbox": [0, 0, 1, 1]}
        )
    else:
        payload["no_such_image.png"] = 5
    out.write_text(json.dumps(payload))
    return out


def record_file_tasks() -> list[str]:
    """Tasks whose demo val split is a record file (JSONL, COCO JSON, caption JSON) read under a bad-sample
    policy. Not here: a split that is a folder of class folders (its bad samples are unreadable images,
    tests/tasks/classification) and a task without a bad-sample policy (retrieval fails on any bad entry)."""
    found = []
    for name in sorted(TASKS):
        recipe = demo_recipe(load_task(TASKS[name]))
        if hasattr(recipe.data, "on_bad_sample") and Path(str(recipe.data.val)).suffix in (".jsonl", ".json"):
            found.append(name)
    return found


def test_every_task_with_record_files_is_covered_by_the_bad_record_check():
    assert {"captioning", "detection", "pose", "prompted-generation"} <= set(record_file_tasks())


@pytest.mark.parametrize("name", record_file_tasks())
def test_a_bad_record_reaches_the_bad_sample_policy(name, tmp_path):
    from trainers.models.registry import get_family

    task = load_task(TASKS[name])
    recipe = demo_recipe(task)
    source = Path(str(recipe.data.val))
    images = getattr(recipe.data, "val_images", None) or recipe.data.images or str(source.parent)
    bad_val = str(_with_a_bad_record(source, tmp_path))
    where = "val_images" if hasattr(recipe.data, "val_images") else "images"  # the val split's image folder
    fields = {"val": bad_val, where: str(Path(images).resolve()), "max_train_samples": FEW}
    _model, processor = get_family(recipe.model.family).build_tiny()(
        recipe.model.demo, seed=0, **task.model_kwargs(recipe)
    )
    failing = in_place(recipe, on_bad_sample="fail", **fields)
    with pytest.raises(DataError, match='on_bad_sample="skip"') as error:
        task.build(failing, processor)
    assert bad_val in str(error.value)
    skipping = in_place(recipe, on_bad_sample="skip", **fields)
    data = task.build(skipping, processor)
    assert len(data.val) > 0
    shutil.rmtree(tmp_path, ignore_errors=True)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_a_constant_output_never_beats_the_baseline(name):
    """Every val item given the first item's prediction: the evaluator counts one distinct prediction (under the
    task's own name where it has one), and the summary's baseline rule then never says the model beats the
    image-blind baseline, whatever the constant scores."""
    from trainers.evaluation import DISTINCT_NAMES, ShardedEvaluator
    from trainers.reporting.summary import baseline_report

    task, recipe, data, predictions = predicted(name)
    constant = [(i, predictions[0]) for i in range(len(data.val))]
    scores = ShardedEvaluator(task, data.val, data.eval_collator or data.collator, 4).score(constant, 0, 1)
    task.close()
    assert [scores[n] for n in DISTINCT_NAMES if n in scores] == [1.0]
    metric, _greater = task.best_metric(recipe.evaluation)
    rigged = {**scores, metric: 1e9}  # even a score above any baseline
    report = baseline_report(_AnyBaseline(metric), rigged, metric)
    assert report["beats_baseline"] is False and "does not read the image" in report["why_not"]
    assert baseline_report(_AnyBaseline(metric), {**rigged, "distinct_predictions": 2.0}, metric)[
        "beats_baseline"
    ]


class _AnyBaseline:
    """A baseline scoring 0 on the task's best metric."""

    def __init__(self, metric: str) -> None:
        self.metric = metric

    def to_dict(self) -> dict:
        return {self.metric: 0.0}

    def render(self) -> str:
        return f"baseline: {self.metric}=0"
