"""The constant-caption baseline: the best a captioner that ignores the image can score.

Caption metrics reward matching the data's template, so a model that emits one caption for every image can
score well (seen on the shapes demo: val_score 0.84 with a single caption for all 48 images). The most
frequent training caption is not the strongest such caption (it scored 0.70 there). So every distinct
training caption is tried as the prediction for every validation image: all of them with the metrics that
need no Java process (ROUGE-L, CIDEr-D, BLEU-4), the best few again with the run's full scorer and composites,
and the best of those by the run's headline score is the baseline. On a large caption set the candidates are
the 512 most frequent distinct captions, ranked on the first 128 validation images. The run reports it next to the model's
scores, with the number of distinct captions the model produced. Needs only the caption files, no model: the
plan shows it too.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainers import atomic_files
from trainers.data_policy import BadSamples, DataError
from trainers.metrics.captions import CaptionScorer
from trainers.recipe.config import CompositeMetric, Recipe
from trainers.tasks.captioning.config import CaptionData
from trainers.tasks.captioning.data import parse_captions
from trainers.tasks.captioning.shapes import is_shapes_caption_set, score_shapes_captions

logger = logging.getLogger(__name__)

BASELINE_PREFIX = "baseline_"
DISTINCT_PREDICTIONS = "distinct_predictions"


@dataclass(frozen=True)
class ConstantCaptionBaseline:
    """The best-scoring constant caption among the training captions, and its scores when predicted for every
    validation image (`candidates`: how many distinct training captions were tried)."""

    caption: str
    train_count: int  # how many training images have this caption
    train_size: int
    val_size: int
    scores: dict[str, float]  # composites first, then the evaluation metrics: the model's metric names
    shapes: dict[str, float] = field(default_factory=dict)  # object / relation accuracy on a shapes val set
    candidates: int = 1

    def metrics(self) -> dict[str, float]:
        """Flat `baseline_<name>` entries, to log next to the model's metrics every evaluation."""
        return {f"{BASELINE_PREFIX}{k}": v for k, v in {**self.scores, **self.shapes}.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "caption": self.caption,
            "train_count": self.train_count,
            "train_size": self.train_size,
            "val_size": self.val_size,
            "candidates": self.candidates,
            **self.scores,
            **self.shapes,
        }

    def render(self) -> str:
        """One plan line: the caption, how common it is, what it scores (the composite first)."""
        head, *rest = self.scores
        detail = ", ".join(f"{k}={self.scores[k]:.3f}" for k in rest)
        shapes = f"; object accuracy {self.shapes['object_accuracy']:.2f}" if self.shapes else ""
        return (
            f"baseline:      best constant caption {self.caption!r} (best of {self.candidates} distinct training "
            f"captions; {self.train_count} of {self.train_size} have it) scores {head}={self.scores[head]:.3f}"
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


_CACHE: dict[tuple, ConstantCaptionBaseline] = {}
# Bump when the rule or a scorer changes what the baseline is for the same inputs: older files are then ignored.
DISK_CACHE_VERSION = 1
CACHE_DIR_ENV = "VLM_FINETUNE_CACHE"  # where the disk copies live; default ~/.cache/vlm-finetune-launcher
FULLY_SCORED = 5  # candidates scored again with the run's own scorer (METEOR too), after the cheap ranking
# The cheap ranking's bounds, so a real caption set costs seconds, not hours: the most frequent distinct training
# captions (ties in order of first appearance), ranked on the first validation images
MAX_CANDIDATES = 512
RANKING_IMAGES = 128
_NO_JAVA = ("rouge_l", "cider_d", "bleu_4")


def _normalised(caption: str) -> str:
    return " ".join(caption.split())


def _headline(scores: dict[str, float], composites: Sequence[CompositeMetric], metrics: Sequence[str]) -> str:
    computable = [c.name for c in composites if set(c.parts) <= set(scores) or c.name in scores]
    return computable[0] if computable else metrics[0]


def _with_composites(
    scores: dict[str, float], metrics: Sequence[str], composites: Sequence[CompositeMetric]
) -> dict[str, float]:
    # A composite of other names (a test's scripted metrics) is left to the run, which fails loudly on it.
    computable = [c for c in composites if set(c.parts) <= set(scores)]
    return {**{c.name: c.compute(scores) for c in computable}, **{name: scores[name] for name in metrics}}


def _cheap_ranking(
    candidates: Sequence[str],
    references: dict[int, list[str]],
    metrics: Sequence[str],
    composites: Sequence[CompositeMetric],
) -> list[str]:
    """The candidates, best first, by the mean of the requested metrics that need no Java process (all of
    them when none is requested: METEOR alone is ranked by their mean)."""
    cheap = [m for m in metrics if m in _NO_JAVA] or list(_NO_JAVA)
    parts = {p for c in composites for p in c.parts} & set(cheap) or set(cheap)
    ranked = []
    references = dict(list(references.items())[:RANKING_IMAGES])
    with CaptionScorer(cheap) as scorer:
        for caption in candidates:
            scores = scorer.score(dict.fromkeys(references, caption), references)
            ranked.append((sum(scores[p] for p in parts) / len(parts), caption))
    ranked.sort(key=lambda pair: -pair[0])  # stable: ties keep the order of first appearance
    return [caption for _score, caption in ranked]


def constant_caption_baseline(
    train_captions: Sequence[str],
    val_references: Sequence[Sequence[str]],
    metrics: Sequence[str],
    composites: Sequence[CompositeMetric] = (),
    scorer: CaptionScorer | None = None,
) -> ConstantCaptionBaseline:
    """The best constant caption among the distinct training captions, scored as the prediction for every
    validation image by the run's own scorer and composites.

    Memoised on the inputs, in this process and on disk (`_disk_path`): the plan and the evaluator of a run,
    and every later dry-run of the same data, would otherwise score the same candidates again (METEOR: seconds).
    """
    key = (tuple(train_captions), tuple(map(tuple, val_references)), tuple(metrics), tuple(composites))
    if key in _CACHE:
        return _CACHE[key]
    stored = _disk_path(key)
    baseline = _read_stored(stored)
    if baseline is None:
        baseline = _compute(train_captions, val_references, metrics, composites, scorer)
        _store(stored, baseline)
    _CACHE[key] = baseline
    return baseline


def _disk_path(key: tuple) -> Path:
    """Where the baseline of these exact inputs is kept between processes: a pure function of the caption
    files, the metrics, the composites and the scorer's version, so every dry-run and run of one data set (and
    each rank) computes it once, METEOR's java included."""
    from importlib.metadata import version

    captions, references, metrics, composites = key
    digest = hashlib.sha256(
        json.dumps(
            [
                DISK_CACHE_VERSION,
                version("pycocoevalcap"),
                captions,
                references,
                metrics,
                [dataclasses.asdict(c) for c in composites],
            ]
        ).encode()
    ).hexdigest()
    root = os.environ.get(CACHE_DIR_ENV) or Path.home() / ".cache" / "vlm-finetune-launcher"
    return Path(root) / "caption_baselines" / f"{digest}.json"


def _read_stored(path: Path) -> ConstantCaptionBaseline | None:
    try:
        return ConstantCaptionBaseline(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):  # none yet, or unreadable: computed again
        return None


def _store(path: Path, baseline: ConstantCaptionBaseline) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_files.write_text(path, json.dumps(dataclasses.asdict(baseline)) + "\n")
    except OSError as exc:  # a read-only home: the run goes on, the next one computes it again
        logger.debug("caption baseline not kept at %s: %s", path, exc)


def _compute(
    train_captions: Sequence[str],
    val_references: Sequence[Sequence[str]],
    metrics: Sequence[str],
    composites: Sequence[CompositeMetric],
    scorer: CaptionScorer | None,
) -> ConstantCaptionBaseline:
    counts = Counter(_normalised(c) for c in train_captions)
    if not counts:
        raise ValueError("no training captions to pick a baseline from")
    references = {i: list(refs) for i, refs in enumerate(val_references)}
    candidates = [caption for caption, _n in counts.most_common(MAX_CANDIDATES)]
    shortlist = _cheap_ranking(candidates, references, metrics, composites)[:FULLY_SCORED]
    own = scorer is None
    scorer = scorer or CaptionScorer(metrics)
    try:
        scored = [
            (
                caption,
                _with_composites(
                    scorer.score(dict.fromkeys(references, caption), references), metrics, composites
                ),
            )
            for caption in shortlist
        ]
    finally:
        if own:
            scorer.close()
    headline = _headline(scored[0][1], composites, metrics)
    caption, scores = max(scored, key=lambda pair: pair[1][headline])  # first of equals: the cheap ranking's
    shapes = {}
    if is_shapes_caption_set(val_references):
        result = score_shapes_captions(dict.fromkeys(references, caption), references)
        shapes = {"object_accuracy": result.object_accuracy, "relation_accuracy": result.relation_accuracy}
    return ConstantCaptionBaseline(
        caption, counts[caption], len(train_captions), len(val_references), scores, shapes, len(candidates)
    )


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
