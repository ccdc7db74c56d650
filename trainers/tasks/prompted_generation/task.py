"""Florence-2 as a `Task`: predict = beam-search `generate` + `post_process_generation`; score = box mAP (OD),
grounding phrase recall, dense-region mAP and region-caption metrics; best checkpoint by mAP@0.5."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trainers.data.images import open_rgb
from trainers.errors import RecipeError
from trainers.tasks.interface import TableRow, Task, TaskData
from trainers.tasks.prompted_generation.config import PromptedData, PromptedEval
from trainers.tasks.prompted_generation.data import PromptedCollator, PromptedDataset, read_jsonl
from trainers.tasks.prompted_generation.scoring import (
    GROUNDING,
    OD,
    MeanBoxBaseline,
    baseline_predictions,
    mean_boxes,
    parse_generation,
    score_all,
)

AP_PREFIX = "ap_"


class PromptedGenerationTask(Task[dict, PromptedData, PromptedEval]):
    """Florence-2-style prompt → text: one JSONL of prefix / suffix pairs (`<OD>`, dense region captions,
    phrase grounding), boxes parsed out of the generated text."""

    data_config = PromptedData
    eval_config = PromptedEval
    metric_prefixes = (AP_PREFIX,)
    default_best_metric = "map_50"
    greater_is_better = True
    pipeline_tag = "image-text-to-text"

    def __init__(self) -> None:
        self.processor: Any = None
        self.evaluation = PromptedEval()
        self.classes: list[str] = []
        self.train_samples: list[Any] = []
        self._scorer: Any = None
        self._baseline: MeanBoxBaseline | None = None

    # ------------------------------------------------------------------------------- recipe level

    def metric_names(self, evaluation: Any = None) -> tuple[str, ...]:
        captions = tuple(f"dense_{m}" for m in (evaluation or PromptedEval()).caption_metrics)
        return (
            "map",
            "map_50",
            "map_75",
            "grounding_recall",
            "dense_map",
            "dense_map_50",
            "dense_region_recall",
            *captions,
            "malformed_rate",
        )

    def check_evaluation(self, evaluation: Any) -> None:
        if not isinstance(evaluation, PromptedEval):
            raise RecipeError(
                f"the {self.name} task is evaluated with PromptedEval(...), got {type(evaluation).__name__}."
            )
        evaluation.validate()
        from trainers.metrics.java import check_java

        check_java(tuple(evaluation.caption_metrics), "evaluation.caption_metrics")

    def _data(self, recipe: Any) -> PromptedData:
        return self.recipe_data(recipe)

    # ---------------------------------------------------------------------------------- run level

    def build(self, recipe: Any, processor: Any) -> TaskData:
        data = self._data(recipe)
        if recipe.training.precision == "fp16":
            raise RecipeError(
                "training.precision=fp16: Florence-2's backward pass gives NaN losses in fp16. Use "
                "training.precision=bf16 (the default on a GPU that supports it) or fp32."
            )
        self.processor, self.evaluation = processor, recipe.evaluation
        train = PromptedDataset(
            data.train,
            "data.train",
            processor,
            data,
            data.images,
            data.max_train_samples,
            data.order,
            recipe.training.seed,
        )
        val = PromptedDataset(
            data.val, "data.val", processor, data, data.val_images or data.images, data.max_val_samples
        )
        self.train_samples = train.samples
        found = sorted({g.label for s in train.samples if s.task == OD for g in s.groups})
        self.classes = list(data.classes) if data.classes is not None else found
        pad = processor.tokenizer.pad_token_id
        return TaskData(
            train=train, val=val, collator=PromptedCollator(pad), eval_collator=PromptedCollator(pad, True)
        )

    def _generate(
        self, model: Any, batch: Mapping[str, Any], num_beams: int, max_new_tokens: int
    ) -> list[str]:
        from trainers.zero3 import synced_generation

        generated = model.generate(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            pixel_values=batch["pixel_values"],
            num_beams=num_beams,
            do_sample=False,
            max_new_tokens=max_new_tokens,
            synced_gpus=synced_generation(),
        )
        return self.processor.tokenizer.batch_decode(generated, skip_special_tokens=False)

    def predict(self, model: Any, batch: dict[str, Any]) -> list[dict]:
        e = self.evaluation
        texts = self._generate(model, batch, e.num_beams, e.max_new_tokens)
        return [
            parse_generation(self.processor, text, task, size)
            for text, task, size in zip(texts, batch["tasks"], batch["image_sizes"], strict=True)
        ]

    def _caption_scorer(self) -> Any:
        if self._scorer is None and self.evaluation.caption_metrics:
            from trainers.metrics.captions import CaptionScorer

            self._scorer = CaptionScorer(self.evaluation.caption_metrics)
        return self._scorer

    def score(self, predictions: Mapping[int, dict], dataset: PromptedDataset) -> dict[str, float]:
        metrics = score_all(predictions, dataset.samples, self.classes, self._caption_scorer())
        if self._baseline is None and self.train_samples:
            boxes = mean_boxes(self.train_samples)
            base = score_all(
                baseline_predictions(boxes, dataset.samples), dataset.samples, self.classes, None
            )
            keep = ("map", "map_50", "map_75", "grounding_recall")
            self._baseline = MeanBoxBaseline({k: base[k] for k in keep}, boxes)
        return metrics

    def baseline(self) -> MeanBoxBaseline | None:
        return self._baseline

    def plan_baseline(self, recipe: Any) -> MeanBoxBaseline | None:
        """The mean-box baseline from the JSONL files alone (no model, no processor). A split with no usable
        line stops here, before any model is loaded, with the recipe's bad-sample policy's paragraph."""
        from trainers.data_policy import BadSamples, ensure_not_empty

        data = self._data(recipe)
        if self.missing_data(recipe) or not (isinstance(data.train, str) and isinstance(data.val, str)):
            return None  # a `datasets` source: the run computes the baseline
        splits = []
        for key, path, images in (
            ("data.train", data.train, data.images),
            ("data.val", data.val, data.val_images or data.images),
        ):
            root = Path(images or Path(path).parent)
            try:
                samples = read_jsonl(Path(path), root, BadSamples("", "skip"))
                if not samples:  # again under the recipe's policy: "fail" names the first bad line
                    bad = BadSamples(f"{path} ({key})", data.on_bad_sample)
                    ensure_not_empty(len(read_jsonl(Path(path), root, bad)), bad, "lines")
            except OSError:
                return None
            splits.append(samples)
        train, val = splits
        classes = (
            list(data.classes)
            if data.classes
            else sorted({g.label for s in train if s.task == OD for g in s.groups})
        )
        boxes = mean_boxes(train)
        base = score_all(baseline_predictions(boxes, val), val, classes, None)
        return MeanBoxBaseline({k: base[k] for k in ("map", "map_50", "map_75", "grounding_recall")}, boxes)

    def save_artifacts(
        self, predictions: Mapping[int, dict], dataset: PromptedDataset, directory: Path
    ) -> None:
        """`boxes.png` (the first `evaluation.draw_images` OD val images: true green, predicted red) and
        `predictions.jsonl` (every prediction with its line)."""

        from trainers.tasks.prompted_generation.draw import sheet

        directory.mkdir(parents=True, exist_ok=True)
        with (directory / "predictions.jsonl").open("w") as out:
            for i in sorted(predictions):
                out.write(json.dumps({"line": dataset.samples[i].where, **predictions[i]}) + "\n")
        rows = []
        for i in sorted(predictions):
            sample = dataset.samples[i]
            if sample.task == OD and len(rows) < self.evaluation.draw_images:
                with open_rgb(sample.image) as image:
                    rows.append((image.convert("RGB"), sample, predictions[i]))
        if rows:
            sheet(rows, directory / "boxes.png")

    def table_rows(
        self, predictions: Mapping[int, dict], dataset: PromptedDataset, n: int = 8
    ) -> list[TableRow]:
        """Image with the parsed predicted boxes and the target's boxes; generated and target text."""

        rows = []
        for i, p in list(predictions.items())[:n]:
            sample = dataset.samples[i]
            with open_rgb(sample.image) as image:
                picture = image.convert("RGB")
            rows.append(
                TableRow(
                    picture,
                    p["text"],
                    sample.suffix,
                    [(*map(float, b), str(label)) for b, label in zip(p["boxes"], p["labels"], strict=False)],
                    [(*map(float, b), label) for label, b in sample.boxes()],
                )
            )
        return rows

    def examples(self, predictions: Mapping[int, dict], dataset: PromptedDataset, n: int = 10) -> list[dict]:
        return [
            {
                "line": dataset.samples[i].where,
                "target": dataset.samples[i].suffix,
                "prediction": p["text"],
                "malformed": p["malformed"],
            }
            for i, p in list(predictions.items())[:n]
        ]

    def close(self) -> None:
        if self._scorer is not None:
            self._scorer.close()

    # ---------------------------------------------------------------------------------- prediction

    def use_evaluation(self, evaluation: PromptedEval) -> None:
        self.evaluation = evaluation

    def predict_images(
        self, model: Any, processor: Any, images: list[Any], options: dict[str, str]
    ) -> list[dict]:
        """One JSON-able dict per image for `options["task"]` (default `<OD>`; grounding takes `options["text"]`,
        the caption); `num_beams` / `max_new_tokens` from options, else the run's evaluation settings."""
        import torch

        task = options.get("task", OD)
        if task not in (OD, "<DENSE_REGION_CAPTION>", GROUNDING):
            raise RecipeError(
                f"--task {task!r} is not a task this model was trained for; use <OD>, "
                "<DENSE_REGION_CAPTION> or <CAPTION_TO_PHRASE_GROUNDING> (with --text CAPTION)."
            )
        prompt = task + (options.get("text", "") if task == GROUNDING else "")
        if task == GROUNDING and prompt == task:
            raise RecipeError("<CAPTION_TO_PHRASE_GROUNDING> needs the caption to ground: pass text=CAPTION.")
        self.processor = processor
        rgb = [im.convert("RGB") for im in images]
        inputs = processor(text=[prompt] * len(rgb), images=rgb, return_tensors="pt", padding=True)
        device = next(model.parameters()).device
        dtype = next(p.dtype for p in model.parameters() if p.dtype.is_floating_point)
        batch = {
            "input_ids": inputs["input_ids"].to(device),
            "attention_mask": inputs["attention_mask"].to(device),
            "pixel_values": inputs["pixel_values"].to(device, dtype),
        }
        defaults = self.evaluation  # the run's (use_evaluation), else PromptedEval()
        with torch.no_grad():
            texts = self._generate(
                model,
                batch,
                int(options.get("num_beams", defaults.num_beams)),
                int(options.get("max_new_tokens", defaults.max_new_tokens)),
            )
        return [
            {"image_size": list(im.size), **parse_generation(processor, text, task, im.size)}
            for text, im in zip(texts, rgb, strict=True)
        ]

    def draw(self, image: Any, prediction: dict) -> Any:
        """`image` with the prediction's boxes and labels drawn (red), scaled up to at least 256 px."""
        from trainers.tasks.prompted_generation.draw import draw_boxes

        scale = max(1.0, 256 / max(image.size))
        return draw_boxes(image, prediction.get("boxes", []), prediction.get("labels", []), scale=scale)
