"""Batched beam-search captioning evaluation, sharded across ranks and gathered.

Each rank generates for a strided shard of the validation set (padded to equal batch counts, which
ZeRO-3's synchronised generation needs), the (index, caption) pairs are gathered, and the main
process scores them; the scores are broadcast so every rank takes the same early-stopping decision.
Next to the metrics it reports how many distinct captions the model produced and what the constant-caption
baseline scores (`trainers.tasks.captioning.baseline`), and on a shapes validation set how many objects
and relations the captions get right, so a model that ignores the image is visible as such.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from accelerate.utils import gather_object
from transformers import Trainer
from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

from trainers.recipe.config import CompositeMetric, Evaluation
from trainers.tasks.captioning.baseline import (
    DISTINCT_PREDICTIONS,
    ConstantCaptionBaseline,
    constant_caption_baseline,
)
from trainers.tasks.captioning.data import CaptionCollator, CaptionJsonDataset
from trainers.tasks.captioning.metrics import CaptionScorer
from trainers.tasks.captioning.shapes import is_shapes_caption_set, score_shapes_captions

logger = logging.getLogger(__name__)


def shard_indices(n: int, rank: int, world: int) -> list[int]:
    """Strided shard of range(n) for `rank`, padded with its last index so every rank has the same length."""
    per_rank = -(-n // world)
    own = list(range(rank, n, world))
    filler = own[-1] if own else 0
    return own + [filler] * (per_rank - len(own))


class CaptionEvaluator:
    """Callable used by `RecipeTrainer.evaluation_loop`: returns {metric: value} on every rank."""

    def __init__(
        self,
        dataset: CaptionJsonDataset,
        collator: CaptionCollator,
        processor: Any,
        settings: Evaluation,
        batch_size: int,
        train_captions: Sequence[str] = (),
        composites: Sequence[CompositeMetric] = (),
    ) -> None:
        self.dataset = dataset
        self.collator = collator
        self.processor = processor
        self.settings = settings
        self.batch_size = batch_size
        self.train_captions = list(train_captions)  # for the constant-caption baseline; none: no baseline
        self.composites = list(composites)
        self.shapes = is_shapes_caption_set(dataset.references)
        self._scorer: CaptionScorer | None = None
        self._baseline: ConstantCaptionBaseline | None = None
        self.last_predictions: dict[int, str] = {}

    def generation_kwargs(self) -> dict[str, Any]:
        s = self.settings
        return {
            "num_beams": s.num_beams,
            "no_repeat_ngram_size": s.no_repeat_ngram_size,
            "repetition_penalty": s.repetition_penalty,
            "length_penalty": s.length_penalty,
            "max_length": s.max_length,
            "early_stopping": True,
        }

    @torch.no_grad()
    def generate(self, trainer: Trainer) -> dict[int, str]:
        """Captions for the whole validation set, identical on every rank."""
        args = trainer.args
        model = trainer.accelerator.unwrap_model(trainer.model)
        was_training = model.training
        model.eval()
        dtype = next(model.parameters()).dtype
        indices = shard_indices(len(self.dataset), args.process_index, args.world_size)
        kwargs = self.generation_kwargs()
        if is_deepspeed_zero3_enabled() and args.world_size > 1:
            kwargs["synced_gpus"] = True
        pairs: list[tuple[int, str]] = []
        for start in range(0, len(indices), self.batch_size):
            chunk = indices[start : start + self.batch_size]
            pixel_values = torch.stack([self.dataset[i]["pixel_values"] for i in chunk])
            pixel_values = pixel_values.to(device=args.device, dtype=dtype if dtype.is_floating_point else None)
            output = model.generate(pixel_values=pixel_values, **kwargs)
            texts = self.processor.batch_decode(output, skip_special_tokens=True)
            pairs.extend(zip(chunk, (t.strip() for t in texts), strict=True))
        if was_training:
            model.train()
        if args.world_size > 1:
            pairs = gather_object(pairs)
        return dict(sorted(dict(pairs).items()))

    def __call__(self, trainer: Trainer) -> dict[str, float]:
        predictions = self.generate(trainer)
        self.last_predictions = predictions
        metrics: dict[str, float] = {}
        if trainer.args.process_index == 0:
            references = {i: self.dataset.references[i] for i in predictions}
            metrics = self.scorer.score(predictions, references)
            metrics[DISTINCT_PREDICTIONS] = len(set(predictions.values()))
            if self.shapes:
                shapes = score_shapes_captions(predictions, references)
                metrics.update(object_accuracy=shapes.object_accuracy, relation_accuracy=shapes.relation_accuracy)
            if self.baseline is not None:
                metrics.update(self.baseline.metrics())
        if trainer.args.world_size > 1 and dist.is_initialized():
            box = [metrics]
            dist.broadcast_object_list(box, src=0)
            metrics = box[0]
        return metrics

    @property
    def scorer(self) -> CaptionScorer:
        if self._scorer is None:
            self._scorer = CaptionScorer(self.settings.metrics)
        return self._scorer

    @property
    def baseline(self) -> ConstantCaptionBaseline | None:
        """The most frequent training caption scored on this validation set (computed once, on first use)."""
        if self._baseline is None and self.train_captions:
            self._baseline = constant_caption_baseline(
                self.train_captions, self.dataset.references, self.settings.metrics, self.composites, self.scorer
            )
        return self._baseline

    def close(self) -> None:
        if self._scorer is not None:
            self._scorer.close()
            self._scorer = None

    def examples(self, n: int = 10) -> list[dict[str, Any]]:
        """A few (file, prediction, references) rows for the summary."""
        refs = self.dataset.references
        return [
            {"file": self.dataset.filenames[i], "prediction": text, "references": refs[i]}
            for i, text in list(self.last_predictions.items())[:n]
        ]
