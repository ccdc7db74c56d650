"""Captioning as a `Task`: `{filename: caption}` JSON + image folder, BLIP-style collation,
predict = batched beam-search `generate`, score = corpus caption metrics (and the constant-caption baseline).

Heavy modules (torch, PIL, the caption scorers) are imported on use: the task is loaded at recipe load to
check metric names.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainers.tasks.captioning.config import SUPPORTED_METRICS, CaptionData, CaptionEval
from trainers.tasks.interface import TableRow, Task, TaskData

if TYPE_CHECKING:
    from trainers.metrics.captions import CaptionScorer
    from trainers.tasks.captioning.baseline import ConstantCaptionBaseline

DISTINCT_PREDICTIONS = "distinct_predictions"
SHAPES_METRICS = ("object_accuracy", "relation_accuracy")


def pixels_only(items: list[dict[str, Any]]) -> dict[str, Any]:
    """The evaluation batch: images only (generation does not see the reference caption)."""
    import torch

    return {"pixel_values": torch.stack([item["pixel_values"] for item in items])}


class CaptioningTask(Task[str, CaptionData, CaptionEval]):
    """One caption per image; greater caption scores are better."""

    data_config = CaptionData
    eval_config = CaptionEval
    greater_is_better = True
    pipeline_tag = "image-to-text"

    def __init__(self) -> None:
        self.settings: CaptionEval = CaptionEval()
        self.processor: Any = None
        self.train_captions: list[str] = []  # for the constant-caption baseline; none: no baseline
        self.composites: tuple = ()
        self.shapes = False
        self._scorer: CaptionScorer | None = None
        # The constant-caption baseline of each evaluated set (by dataset id), scored once, on first use.
        self._baselines: dict[int, ConstantCaptionBaseline] = {}
        self._val_id: int | None = None

    # --------------------------------------------------------------------------- declared, recipe level

    def metric_names(self, evaluation: CaptionEval | None = None) -> tuple[str, ...]:
        listed = tuple(evaluation.metrics) if evaluation is not None else SUPPORTED_METRICS
        return (*listed, DISTINCT_PREDICTIONS, *SHAPES_METRICS)

    def best_metric(self, evaluation: CaptionEval | None = None) -> tuple[str, bool]:
        """The first caption metric the recipe lists (the seed's recipes put METEOR first)."""
        return self.metric_names(evaluation)[0], True

    def check_evaluation(self, evaluation: CaptionEval) -> None:
        from trainers.metrics.java import check_java

        evaluation.validate()
        check_java(tuple(evaluation.metrics), "evaluation.metrics")

    def metric_hint(self, metric: str, evaluation: CaptionEval | None = None) -> str:
        listed = tuple(evaluation.metrics) if evaluation is not None else ()
        if metric in SUPPORTED_METRICS:
            return (
                f"{metric} is computed only when listed in evaluation.metrics: add it there "
                f"(evaluation.metrics={','.join((*listed, metric))}) or watch another metric."
            )
        return (
            f"The caption metrics it computes are those listed in evaluation.metrics, from "
            f"{', '.join(SUPPORTED_METRICS)}."
        )

    def plan_baseline(self, recipe: Any) -> Any:
        from trainers.tasks.captioning.baseline import plan_baseline

        return plan_baseline(recipe)

    # --------------------------------------------------------------------------------------- run level

    def build(self, recipe: Any, processor: Any) -> TaskData:
        from trainers.data.source_config import DatasetSource
        from trainers.data.sources import load_source
        from trainers.tasks.captioning.baseline import recipe_composites
        from trainers.tasks.captioning.data import (
            CaptionCollator,
            CaptionDataset,
            CaptionJsonDataset,
            CaptionSourceDataset,
        )
        from trainers.tasks.captioning.shapes import is_shapes_caption_set

        data: CaptionData = recipe.data
        policy, images = data.on_bad_sample, processor.image_processor

        def split(
            key: str,
            captions: str | DatasetSource,
            image_dir: str | None,
            limit: int | None = None,
            **train_only: Any,
        ) -> CaptionDataset:
            if isinstance(captions, DatasetSource):
                return CaptionSourceDataset(
                    load_source(captions, key), key, images, limit=limit, **train_only
                )
            return CaptionJsonDataset(
                Path(captions), Path(image_dir), images, policy, limit=limit, **train_only
            )

        train = split(
            "data.train",
            data.train,
            data.images,
            data.max_train_samples,
            augment=data.augment,
            seed=recipe.training.seed,
        )
        val = split("data.val", data.val, data.val_images or data.images, data.max_val_samples)
        self.settings, self.processor = recipe.evaluation, processor
        self.train_captions = [captions[0] for captions in train.references]  # the captions that train
        self.composites = recipe_composites(recipe)
        self.shapes = is_shapes_caption_set(val.references)
        self._val_id = id(val)
        return TaskData(
            train=train,
            val=val,
            collator=CaptionCollator(processor.tokenizer, max_length=data.max_length),
            eval_collator=pixels_only,
            extra_val={
                name: split(f"data.extra_val[{name!r}].captions", s.captions, s.images)
                for name, s in data.extra_val.items()
            },
            test=split("data.test.captions", data.test.captions, data.test.images)
            if data.test is not None
            else None,
        )

    def predict(self, model: Any, batch: dict[str, Any]) -> list[str]:
        from trainers.tasks.captioning.scoring import generation_kwargs
        from trainers.zero3 import synced_generation

        output = model.generate(
            pixel_values=batch["pixel_values"],
            **generation_kwargs(self.settings, synced_gpus=synced_generation()),
        )
        return [text.strip() for text in self.processor.batch_decode(output, skip_special_tokens=True)]

    def use_evaluation(self, evaluation: CaptionEval) -> None:
        self.settings = evaluation

    def predict_images(self, model: Any, processor: Any, images: list, options: dict[str, str]) -> list[dict]:
        """`{"caption"}` per image, generated with the run's evaluation settings (`--num_beams N` /
        `--max_length N` override them)."""
        import dataclasses

        import torch

        from trainers.errors import RecipeError
        from trainers.tasks.captioning.scoring import generation_kwargs

        overrides = {}
        for key in ("num_beams", "max_length"):
            if key in options:
                if not str(options[key]).isdigit() or int(options[key]) < 1:
                    raise RecipeError(f"--{key} is a whole number >= 1, got {options[key]!r}.")
                overrides[key] = int(options[key])
        settings = dataclasses.replace(self.settings, **overrides)
        pixels = processor(images=[im.convert("RGB") for im in images], return_tensors="pt")["pixel_values"]
        parameter = next(model.parameters())
        with torch.no_grad():
            output = model.generate(
                pixel_values=pixels.to(parameter.device, parameter.dtype), **generation_kwargs(settings)
            )
        return [
            {"caption": text.strip()} for text in processor.batch_decode(output, skip_special_tokens=True)
        ]

    def draw(self, image: Any, prediction: dict) -> Any:
        """The image scaled up to at least 256 px, the caption written under it."""
        from trainers.tasks.captioning.draw import captioned

        return captioned(image, prediction["caption"])

    def score(self, predictions: Mapping[int, str], dataset: Any) -> dict[str, float]:
        from trainers.tasks.captioning import scoring
        from trainers.tasks.captioning.shapes import is_shapes_caption_set

        key = id(dataset)
        if key not in self._baselines and self.train_captions:  # once per set and run, on first use
            self._baselines[key] = scoring.run_baseline(
                self.train_captions, dataset.references, self.settings, self.composites, self.scorer
            )
        shapes = self.shapes if key == self._val_id else is_shapes_caption_set(dataset.references)
        return scoring.caption_scores(
            self.scorer, predictions, dataset.references, shapes, self._baselines.get(key)
        )

    @property
    def scorer(self) -> CaptionScorer:
        if self._scorer is None:
            from trainers.metrics.captions import CaptionScorer

            self._scorer = CaptionScorer(self.settings.metrics)
        return self._scorer

    def baseline(self) -> ConstantCaptionBaseline | None:
        """The validation set's constant-caption baseline (extra sets report theirs under their prefix)."""
        return self._baselines.get(self._val_id) if self._val_id is not None else None

    def examples(self, predictions: Mapping[int, str], dataset: Any, n: int = 10) -> list[dict[str, Any]]:
        """A few (file, prediction, references) rows for the summary."""
        refs = dataset.references
        return [
            {"file": dataset.filenames[i], "prediction": text, "references": refs[i]}
            for i, text in list(predictions.items())[:n]
        ]

    def save_artifacts(self, predictions: Mapping[int, str], dataset: Any, directory: Path) -> None:
        """`captions.png`: the first `evaluation.plot_images` val images, each with its predicted caption
        (red) above its reference captions (green)."""
        from trainers.tasks.captioning.draw import CaptionCell, caption_sheet

        shown = sorted(predictions)[: max(0, self.settings.plot_images)]
        if shown:
            cells = [
                CaptionCell(dataset._load_image(i), predictions[i], dataset.references[i]) for i in shown
            ]
            caption_sheet(cells, directory / "captions.png")

    def table_rows(self, predictions: Mapping[int, str], dataset: Any, n: int = 8) -> list[TableRow]:
        """Image, generated caption, reference captions."""
        refs = dataset.references
        return [
            TableRow(dataset._load_image(i), text, " | ".join(refs[i]))
            for i, text in list(predictions.items())[:n]
        ]

    def close(self) -> None:
        if self._scorer is not None:
            self._scorer.close()
            self._scorer = None
