"""The constant-caption baseline: what a captioner that ignores the image scores.

Caption metrics reward matching the data's template, so a model that emits one caption for every image can
score well (seen on the shapes demo: val_score 0.85 with a single caption for all 48 images). The run
therefore reports, next to the model's scores, the score of the most frequent training caption used for
every validation image, computed by the same `CaptionScorer` and the same composites, and the number of
distinct captions the model produced. Needs only the caption files, no model: the plan shows it too.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainers.data_policy import BadSamples, DataError
from trainers.metrics.captions import CaptionScorer
from trainers.recipe.config import CompositeMetric, Recipe
from trainers.tasks.captioning.config import CaptionData
from trainers.tasks.captioning.data import parse_captions
from trainers.tasks.captioning.shapes import is_shapes_caption_set, score_shapes_captions

BASELINE_PREFIX = "baseline_"
DISTINCT_PREDICTIONS = "distinct_predictions"


@dataclass(frozen=True)
class ConstantCaptionBaseline:
    """The most frequent training caption, and its scores when predicted for every validation image."""

    caption: str
    train_count: int  # how many training images have this caption
    train_size: int
    val_size: int
    scores: dict[str, float]  # composites first, then the evaluation metrics: the model's metric names
    shapes: dict[str, float] = field(default_factory=dict)  # object / relation accuracy on a shapes val set

    def metrics(self) -> dict[str, float]:
        """Flat `baseline_<name>` entries, to log next to the model's metrics every evaluation."""
        return {f"{BASELINE_PREFIX}{k}": v for k, v in {**self.scores, **self.shapes}.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "caption": self.caption,
            "train_count": self.train_count,
            "train_size": self.train_size,
            "val_size": self.val_size,
            **self.scores,
            **self.shapes,
        }

    def render(self) -> str:
        """One plan line: the caption, how common it is, what it scores (the composite first)."""
        head, *rest = self.scores
        detail = ", ".join(f"{k}={self.scores[k]:.3f}" for k in rest)
        shapes = f"; object accuracy {self.shapes['object_accuracy']:.2f}" if self.shapes else ""
        return (
            f"baseline:      constant caption {self.caption!r} ({self.train_count} of {self.train_size} training "
            f"captions) scores {head}={self.scores[head]:.3f}"
            + (f" ({detail})" if detail else "")
            + f" on {self.val_size} val images{shapes}"
        )


@dataclass(frozen=True)
class BaselineUnavailable:
    """Why the plan shows no baseline (the caption files are missing or unreadable)."""

    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"unavailable": self.reason}

    def render(self) -> str:
        return f"baseline:      not computed ({self.reason})"


def most_frequent_caption(captions: Iterable[str]) -> tuple[str, int]:
    """The most frequent caption (whitespace-normalised) and its count; ties go to the one seen first."""
    counts = Counter(" ".join(c.split()) for c in captions)
    if not counts:
        raise ValueError("no training captions to pick a baseline from")
    return counts.most_common(1)[0]


_CACHE: dict[tuple, ConstantCaptionBaseline] = {}


def constant_caption_baseline(
    train_captions: Sequence[str],
    val_references: Sequence[Sequence[str]],
    metrics: Sequence[str],
    composites: Sequence[CompositeMetric] = (),
    scorer: CaptionScorer | None = None,
) -> ConstantCaptionBaseline:
    """Score the most frequent training caption as the prediction for every validation image.

    Memoised on the inputs: the plan and the evaluator of one run compute it from the same captions, and
    METEOR costs a java start.
    """
    key = (tuple(train_captions), tuple(map(tuple, val_references)), tuple(metrics), tuple(composites))
    if key in _CACHE:
        return _CACHE[key]
    caption, count = most_frequent_caption(train_captions)
    predictions = {i: caption for i in range(len(val_references))}
    references = {i: list(refs) for i, refs in enumerate(val_references)}
    own = scorer is None
    scorer = scorer or CaptionScorer(metrics)
    try:
        scores = scorer.score(predictions, references)
    finally:
        if own:
            scorer.close()
    # A composite of other names (a test's scripted metrics) is left to the run, which fails loudly on it.
    computable = [c for c in composites if set(c.parts) <= set(scores)]
    scores = {**{c.name: c.compute(scores) for c in computable}, **{name: scores[name] for name in metrics}}
    shapes = {}
    if is_shapes_caption_set(val_references):
        result = score_shapes_captions(predictions, references)
        shapes = {"object_accuracy": result.object_accuracy, "relation_accuracy": result.relation_accuracy}
    baseline = ConstantCaptionBaseline(
        caption, count, len(train_captions), len(val_references), scores, shapes
    )
    _CACHE[key] = baseline
    return baseline


def recipe_composites(recipe: Recipe) -> tuple[CompositeMetric, ...]:
    """The composite metrics a run computes (the early-stopping `mean(...)`), so the baseline has them too."""
    metric = recipe.early_stopping.metric if recipe.early_stopping else None
    return (metric,) if isinstance(metric, CompositeMetric) else ()


def _first_captions(path: Path, limit: int | None, policy: str) -> list[list[str]]:
    captions = list(parse_captions(path, BadSamples(str(path), policy)).values())  # type: ignore[arg-type]
    return captions[:limit] if limit is not None else captions


def plan_baseline(recipe: Recipe) -> ConstantCaptionBaseline | BaselineUnavailable:
    """The baseline for `--dry-run` and `plan.json`, from the caption files alone (images are not opened).

    Data problems are reported by the run itself with their full message; here they only explain why the
    plan has no baseline.
    """
    data = recipe.data
    if not isinstance(data, CaptionData):
        return BaselineUnavailable(f"the captioning baseline needs CaptionData, got {type(data).__name__}")
    try:
        train = [
            refs[0] for refs in _first_captions(Path(data.train), data.max_train_samples, data.on_bad_sample)
        ]
        val = _first_captions(Path(data.val), data.max_val_samples, data.on_bad_sample)
    except DataError as error:
        return BaselineUnavailable(str(error).split(". ")[0])
    return constant_caption_baseline(train, val, recipe.evaluation.metrics, recipe_composites(recipe))
