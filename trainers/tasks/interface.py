"""The task interface: everything the generic core needs to know about one task, and nothing more.

A task (captioning, classification, detection, pose, prompted-generation, retrieval) is a subclass of
`Task[Prediction, DataConfig, EvalConfig]` living in its own folder next to its config dataclasses; like a
transformers `TrainerCallback`, it overrides only the hooks it needs. The core never branches on a task: it
asks the task. The hooks come in three groups: `RecipeChecks` (recipe load and `--dry-run`, all optional),
`RunHooks` (`build`, `predict` and `score` required; loss, artifacts, table rows, examples optional) and
`PlainImagePrediction` (`trainers.predict`, optional). Its name is its data class's `task`.

How `trainers/run.py` and `trainers/plan.py` call it:

    task = get_task(recipe.data)                           # trainers.tasks.registry: the data class names its task
    check_metric_names(task, recipe.evaluation, {...})     # recipe load and --dry-run (trainers.recipe.checks)
    family.check_serves(task.name)                         # a family that cannot serve it is a recipe error
    model, processor = family.load()(recipe.model.id, LoadOptions(...), **task.model_kwargs(recipe))
    data = task.build(recipe, processor)                   # TaskData: train / val / extra val / test, collators
    evaluator = ShardedEvaluator(task, data.val, data.eval_collator, batch_size)   # trainers/evaluation.py
    trainer = RecipeTrainer(..., task=task, evaluator=evaluator)  # TaskLossMixin: the task's loss hook
    name, greater = task.best_metric(recipe.evaluation)    # unless early_stopping names one

Evaluation is split in two on purpose: `predict` runs on every rank over its shard (model forward or
`generate`), `score` runs once, on rank 0, over the gathered predictions of the whole set. A task therefore
never deals with ranks, padding or gathering; the evaluator does that once for every task.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol

from typing_extensions import TypeVar  # a default for the config parameters: `Task[float]` stays valid

from trainers.errors import RecipeError

if TYPE_CHECKING:
    import torch
    from PIL import Image
    from torch import nn
    from torch.utils.data import Dataset

    from trainers.recipe.config import Freeze, Recipe, Unfreeze

P = TypeVar("P")  # one prediction: a caption, a class id, a list of boxes, ...
D = TypeVar("D", default=Any)  # the task's data config (`PoseData`)
E = TypeVar("E", default=Any)  # the task's evaluation config (`PoseEval`)

# The Trainer always reports the evaluation loss, whatever the task.
TRAINER_METRICS = ("loss",)


class Baseline(Protocol):
    """A no-model baseline (constant caption, mean box, chance): one plan line and its numbers."""

    def render(self) -> str: ...

    def to_dict(self) -> dict[str, Any]: ...


@dataclass
class TaskData:
    """What `Task.build` returns: the splits and how to batch them.

    `eval_collator` batches validation and test items for `Task.predict` (captioning drops the caption
    tokens there); it defaults to `collator`. `extra_val` sets are evaluated with their name as a metric
    prefix; `test` is evaluated once at the end, with the best model, and reported apart.
    """

    train: Dataset
    val: Dataset
    collator: Callable[[list[dict[str, Any]]], dict[str, Any]]
    eval_collator: Callable[[list[dict[str, Any]]], dict[str, Any]] | None = None
    extra_val: dict[str, Dataset] = field(default_factory=dict)
    test: Dataset | None = None

    def __post_init__(self) -> None:
        if self.eval_collator is None:
            self.eval_collator = self.collator

    def splits(self) -> Iterator[tuple[str, Dataset]]:
        """(name, dataset) for every split present, e.g. for the data report of the summary."""
        yield "train", self.train
        yield "val", self.val
        yield from ((f"val_{name}", ds) for name, ds in self.extra_val.items())
        if self.test is not None:
            yield "test", self.test


Box = tuple[float, float, float, float, str]  # x0, y0, x1, y1 in the image's pixels, label


@dataclass
class TableRow:
    """One row of the per-evaluation prediction table (W&B): an image, what the model said, the truth.

    Boxes are drawn on the image (`wandb.Image(..., boxes=...)`); captions and class names are text cells.
    `extra` adds the task's own columns after the target, the same names in every row of one table (retrieval:
    the query and whether the top-k hit; pose: the mean pixel error); an image value becomes an image cell.
    """

    image: Image.Image
    prediction: str
    target: str
    predicted_boxes: list[Box] = field(default_factory=list)
    true_boxes: list[Box] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


PLACEHOLDER_LABELS = 2  # the label count a dry-run plans with when the data that names the labels is missing


def label_fields(names: list[str]) -> dict[str, Any]:
    """A model config's label fields (`num_labels`, `id2label`, `label2id`) for the names, in order."""
    return {
        "num_labels": len(names),
        "id2label": dict(enumerate(names)),
        "label2id": {n: i for i, n in enumerate(names)},
    }


class RecipeChecks(Generic[D, E]):
    """Recipe-time hooks: checked at recipe load and by `--dry-run`, before any model is loaded. All optional.

    Class attributes:
        name: the task's name (registry key, a family's `tasks=` entry); it follows from `data_config.task`.
        data_config / eval_config: its recipe dataclasses (in the task's folder).
        metrics: names `score` always produces; `metric_prefixes`: families of names it produces per
            label or per set (e.g. "class_accuracy/" + label), accepted by the metric-name check.
        default_best_metric / greater_is_better: what the best checkpoint tracks when the recipe names none.
        pipeline_tag: the Hugging Face Hub's pipeline tag the model card declares; None: none fits.
    """

    name: ClassVar[str]
    data_config: ClassVar[type]
    eval_config: ClassVar[type]
    metrics: ClassVar[tuple[str, ...]] = ()
    metric_prefixes: ClassVar[tuple[str, ...]] = ()
    default_best_metric: ClassVar[str] = "loss"
    greater_is_better: ClassVar[bool] = False
    pipeline_tag: ClassVar[str | None] = None  # the Hub's task tag for the model card (`image-to-text`)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """The name is spelled once, by the data class (`PoseData.task`); a task without one names itself."""
        super().__init_subclass__(**kwargs)
        task = getattr(cls.__dict__.get("data_config"), "task", None)
        if "name" not in cls.__dict__ and isinstance(task, str):
            cls.name = task

    def recipe_data(self, recipe: Recipe) -> D:
        """The recipe's data section, checked to be this task's data class (a RecipeError otherwise)."""
        if not isinstance(recipe.data, self.data_config):
            raise RecipeError(
                f"the {self.name} task needs data={self.data_config.__name__}(...), got {type(recipe.data).__name__}."
            )
        return recipe.data

    def metric_names(self, evaluation: E | None = None) -> tuple[str, ...]:
        """The metrics this task's `score` produces under `evaluation` (override when they depend on it)."""
        return self.metrics

    def best_metric(self, evaluation: E | None = None) -> tuple[str, bool]:
        """(metric name, greater is better) for the kept best checkpoint when the recipe names none."""
        return self.default_best_metric, self.greater_is_better

    def check_evaluation(self, evaluation: E) -> None:
        """Raise a RecipeError for evaluation settings this task cannot run (checked at recipe load)."""

    def metric_hint(self, metric: str, evaluation: E | None = None) -> str:
        """A sentence appended to the unknown-metric error (e.g. "list it in evaluation.metrics"); "" for none."""
        return ""

    def missing_data(self, recipe: Recipe) -> list[str]:
        """`key 'path' (what)` for each data path of the recipe that does not exist: checked before any model.

        The data class's own check (`trainers.data.split_config.SplitData.missing_paths`, from the path fields
        it declares); none for data without one."""
        missing_paths = getattr(recipe.data, "missing_paths", None)
        mix_missing = getattr(recipe.data, "mix_missing", None)  # a mixed training split's further sources
        return (missing_paths() if missing_paths is not None else []) + (
            mix_missing() if mix_missing is not None else []
        )

    def missing_data_message(self, recipe: Recipe, missing: list[str], model_note: str) -> str:
        """The one-paragraph error for `missing` data paths (`model_note`: the model is not loaded yet)."""
        message = getattr(recipe.data, "missing_message", None)
        if message is not None:
            return message(missing, model_note)
        return f"Data not found: {'; '.join(missing)}.{model_note} Fix the data paths in the recipe."

    def plan_baseline(self, recipe: Recipe) -> Baseline | None:
        """What the validation set scores without a model, from the data files alone, for the plan; or None."""
        return None

    def freeze_rules(self, recipe: Recipe) -> list[tuple[Freeze | Unfreeze, str]]:
        """(Freeze / Unfreeze rule, the recipe setting it comes from) applied before the recipe's own `freeze`
        rules (after LoRA's implicit `freeze *`); the plan lists each with its origin. E.g. detection's
        `data.backbone` policy: DETR's backbone comes out of construction frozen, the recipe states what it wants.
        """
        return []

    def model_kwargs(self, recipe: Recipe) -> dict[str, Any]:
        """Extra keyword arguments for the family's loader that the data decides (labels, label names)."""
        return {}

    def label_set_stand_in(self, recipe: Recipe) -> str | None:
        """When the label set comes from data that is not there (a `--dry-run` before the data exists): the
        sentence saying what `model_kwargs` planned with instead; None when the plan's label set is the real one.
        """
        return None


class RunHooks(Generic[P, D]):
    """Run-time hooks. Required: `build`, `predict`, `score` (`REQUIRED`); the others have working defaults."""

    REQUIRED: ClassVar[tuple[str, ...]] = ("build", "predict", "score")

    def build(self, recipe: Recipe, processor: Any) -> TaskData:
        """The datasets and collators from the recipe's data section and the model's processor (a
        transformers processor or image processor: families differ, so it is not typed further)."""
        raise NotImplementedError

    def predict(self, model: nn.Module, batch: dict[str, Any]) -> list[P]:
        """One prediction per item of `batch` (plain Python / CPU objects: they are gathered across ranks).

        Called on every rank, the same number of times on each (padded batches included), in eval mode and
        under `torch.no_grad()`; tensors in `batch` are already on the model's device and float dtype.
        """
        raise NotImplementedError

    def score(self, predictions: Mapping[int, P], dataset: Dataset) -> dict[str, float]:
        """Metrics over the whole set: `predictions[i]` is the prediction for `dataset[i]`, each index once."""
        raise NotImplementedError

    def compute_loss(self, model: nn.Module, inputs: dict[str, Any]) -> torch.Tensor | None:
        """The training (and eval) loss when the model's own is not the one (heatmap MSE, contrastive).

        None, the default, means: use the model's loss (`outputs.loss`), as the Trainer does.
        """
        return None

    def baseline(self) -> Baseline | None:
        """The same no-model baseline as computed by the run (for the summary), once `score` ran; or None."""
        return None

    def save_artifacts(self, predictions: Mapping[int, P], dataset: Dataset, directory: Path) -> None:
        """Write files describing an evaluation (a confusion matrix, sample images); rank 0 only."""

    def examples(self, predictions: Mapping[int, P], dataset: Dataset, n: int = 10) -> list[dict[str, Any]]:
        """A few rows for the run summary."""
        return [{"index": i, "prediction": p} for i, p in list(predictions.items())[:n]]

    def table_rows(self, predictions: Mapping[int, P], dataset: Dataset, n: int = 8) -> list[TableRow]:
        """The first `n` predictions as rows of the prediction table logged after each evaluation (rank 0);
        none by default (the table is then not logged)."""
        return []

    def close(self) -> None:
        """Release what `score` holds between evaluations (a METEOR java process)."""


@dataclass(frozen=True)
class FinishedRuns:
    """How a task reaches another finished run while it predicts (pose's `--detector RUN`): `trainers.predict`,
    a floor above the tasks, hands over its own readers. `recipe(run_dir, what)` is the run's recipe.json (an
    error naming `what` when there is none); `load(run_dir, task_name, what=...)` its best model, processor
    and task (`trainers.predict.LoadedRun`)."""

    recipe: Callable[[Path, str], dict[str, Any]]
    load: Callable[..., Any]


class PlainImagePrediction(Generic[E]):
    """Prediction on images outside any dataset (`python -m trainers.predict`, the app). Optional: a task
    without `predict_images` / `draw` says so in one user-facing error (`TaskCannotPredict`)."""

    name: ClassVar[str]
    # Text options `predict_images` reads (option name → its default): the app shows a text box for each
    # (the chat task's `prompt`); the CLI takes them as `--name value`.
    text_options: ClassVar[Mapping[str, str]] = {}
    finished_runs: FinishedRuns | None = None  # set by `trainers.predict.load_run` before `check_options`

    def use_evaluation(self, evaluation: E) -> None:
        """Take the run's own evaluation settings (`trainers.predict` passes the section of its recipe.json), so
        `predict_images` generates as the run's evaluation did, not with the defaults; none to take by default."""

    def predict_images(
        self, model: nn.Module, processor: Any, images: list[Image.Image], options: dict[str, str]
    ) -> list[dict[str, Any]]:
        """One JSON-able dict per image, for images outside any dataset; `options` are the CLI's extra
        `--key value` pairs (e.g. a score threshold). Called in eval mode; the task moves inputs itself."""
        raise TaskCannotPredict(f"the {self.name} task cannot predict plain images (no predict_images hook).")

    def check_options(self, options: dict[str, str], files: Sequence[Path]) -> None:
        """Refuse bad `options` (a missing file an option names, two options that exclude each other) before
        any model is loaded; `files` are the images `trainers.predict` will read. Accepts all by default."""

    def predict_files(
        self,
        model: nn.Module,
        processor: Any,
        images: list[Image.Image],
        files: Sequence[Path],
        options: dict[str, str],
    ) -> list[dict[str, Any]]:
        """`predict_images` for images read from `files` (`trainers.predict`), for tasks whose options are
        keyed by file name (pose's `--boxes`); `predict_images` by default."""
        return self.predict_images(model, processor, images, options)

    def draw(self, image: Image.Image, prediction: dict[str, Any]) -> Image.Image:
        """`image` with `prediction` (one `predict_images` result) drawn on it."""
        raise TaskCannotPredict(f"the {self.name} task cannot draw its predictions on images (no draw hook).")


class Task(RecipeChecks[D, E], RunHooks[P, D], PlainImagePrediction[E], Generic[P, D, E]):
    """One task: `Task[Prediction, DataConfig, EvalConfig]` (the configs default to Any). A task author
    implements `build`, `predict` and `score` and sets `data_config` / `eval_config`; every other hook, in the
    three groups above, is optional."""


class TaskCannotPredict(RecipeError):
    """A task without the plain-image hooks was asked to predict or draw (a user-facing error, exit 2)."""


class TaskLossMixin:
    """Trainer mixin: the task's `compute_loss` hook, when it returns a loss, replaces the model's.

    `class RecipeTrainer(TaskLossMixin, ..., Trainer)` with `self.task` set. The eval loss goes through the
    same hook (the Trainer's `prediction_step` calls `compute_loss(..., return_outputs=True)`).
    """

    task: Task | None = None

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = self.task.compute_loss(model, inputs) if self.task is not None else None
        if loss is None:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)  # type: ignore[misc]
        return (loss, {"loss": loss}) if return_outputs else loss


def load_task(path: str) -> Task:
    """`"module:Class"` → an instance; task modules import torch, so they are imported only when used."""
    module, _, attr = path.partition(":")
    task = getattr(importlib.import_module(module), attr)()
    if not isinstance(task, Task):
        raise TypeError(f"{path} is a {type(task).__name__}, not a trainers.tasks.interface.Task")
    return task


def produces(task: Task, metric: str, evaluation: Any = None, extra_sets: Sequence[str] = ()) -> bool:
    """Whether `metric` (with or without the Trainer's `eval_` prefix) comes out of an evaluation of `task`:
    of the target val set, or of an extra validation set under its prefix (`coco_rouge_l`; no loss there)."""
    name = metric.removeprefix("eval_")
    if any(
        name.startswith(f"{s}_")
        and produces(task, name.removeprefix(f"{s}_"), evaluation)
        and name.removeprefix(f"{s}_") not in TRAINER_METRICS
        for s in extra_sets
    ):
        return True
    return (
        name in task.metric_names(evaluation)
        or name in TRAINER_METRICS
        or any(name.startswith(prefix) and len(name) > len(prefix) for prefix in task.metric_prefixes)
    )


def check_metric_names(
    task: Task, evaluation: Any, names: Mapping[str, str | Sequence[str]], extra_sets: Sequence[str] = ()
) -> None:
    """Raise a RecipeError for any metric, keyed by the recipe key naming it, that `task` does not produce.

    `names` maps a recipe key (`early_stopping.metric`) to one metric name or several (a `mean(...)`);
    `extra_sets` are the names of the recipe's extra validation sets (their metrics carry `<name>_`).
    """
    available = [*task.metric_names(evaluation), *TRAINER_METRICS]
    shown = ", ".join(
        [*available, *(f"{p}<label>" for p in task.metric_prefixes), *(f"{s}_<metric>" for s in extra_sets)]
    )
    for key, value in names.items():
        for metric in (value,) if isinstance(value, str) else tuple(value):
            if produces(task, metric, evaluation, extra_sets):
                continue
            close = difflib.get_close_matches(metric.removeprefix("eval_"), available, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            extra = task.metric_hint(metric.removeprefix("eval_"), evaluation)
            raise RecipeError(
                f"{key}: {metric!r} is not a metric the {task.name} task produces; it produces {shown}.{hint}"
                f"{' ' + extra if extra else ''} Set {key} to one of those."
            )
