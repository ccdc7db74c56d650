"""Captioning's scoring: beam-search settings for `generate`, and the scores of a set of captions.

Next to the caption metrics a captioning evaluation reports how many distinct captions the model produced
and what the constant-caption baseline scores (`trainers.tasks.captioning.baseline`), and on a shapes
validation set how many objects and relations the captions get right, so a model that ignores the image is
visible as such. Sharding, gathering and broadcasting are the generic evaluator's (`trainers.evaluation`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from trainers.metrics.captions import CaptionScorer
from trainers.recipe.config import CompositeMetric
from trainers.tasks.captioning.baseline import (
    DISTINCT_PREDICTIONS,
    ConstantCaptionBaseline,
    constant_caption_baseline,
)
from trainers.tasks.captioning.config import CaptionEval
from trainers.tasks.captioning.shapes import score_shapes_captions


def generation_kwargs(settings: CaptionEval, synced_gpus: bool = False) -> dict[str, Any]:
    """`generate` arguments from the recipe's evaluation section (`synced_gpus` under multi-rank ZeRO-3)."""
    kwargs: dict[str, Any] = {
        "num_beams": settings.num_beams,
        "no_repeat_ngram_size": settings.no_repeat_ngram_size,
        "repetition_penalty": settings.repetition_penalty,
        "length_penalty": settings.length_penalty,
        "max_length": settings.max_length,
        "early_stopping": True,
    }
    if synced_gpus:
        kwargs["synced_gpus"] = True
    return kwargs


def run_baseline(
    train_captions: Sequence[str],
    references: Sequence[Sequence[str]],
    settings: CaptionEval,
    composites: Sequence[CompositeMetric],
    scorer: CaptionScorer,
) -> ConstantCaptionBaseline:
    """The most frequent training caption scored on this validation set with the run's scorer."""
    return constant_caption_baseline(train_captions, references, settings.metrics, composites, scorer)


def caption_scores(
    scorer: CaptionScorer,
    predictions: Mapping[int, str],
    references: Sequence[Sequence[str]],
    shapes: bool,
    baseline: ConstantCaptionBaseline | None,
) -> dict[str, float]:
    """Caption metrics, the distinct-prediction count, shapes accuracies and the baseline's `baseline_*`."""
    refs = {i: list(references[i]) for i in predictions}
    metrics = dict(scorer.score(dict(predictions), refs))
    metrics[DISTINCT_PREDICTIONS] = len(set(predictions.values()))
    if shapes:
        result = score_shapes_captions(dict(predictions), refs)
        metrics.update(object_accuracy=result.object_accuracy, relation_accuracy=result.relation_accuracy)
    if baseline is not None:
        metrics.update(baseline.metrics())
    return metrics
