"""Object detection as a `Task`: predict = DETR forward + `post_process_object_detection` at the original
image sizes, score = COCO mAP through pycocotools (`trainers.metrics.boxes`), a PNG of true vs predicted
boxes per evaluation, and the mean-box baseline beside the model's numbers."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from PIL import Image

from trainers.data.images import open_rgb
from trainers.errors import RecipeError
from trainers.metrics.boxes import CLASS_AP_PREFIX, MAP_METRICS, ImageBoxes, coco_box_metrics
from trainers.recipe.config import Freeze, Unfreeze
from trainers.tasks.detection.config import DetectionData, DetectionEval
from trainers.tasks.interface import PLACEHOLDER_LABELS, TableRow, Task, TaskData, label_fields

Prediction = dict[str, list]  # {"boxes": [[x1, y1, x2, y2], ...], "scores": [...], "labels": [...]}

BACKBONE = "model.backbone"
# The stem and the first residual stage of the transformers ResNet inside DETR's conv encoder: what the
# original DETR keeps frozen (torchvision's conv1 + layer1).
STAGE1 = ("model.backbone.model.embedder", "model.backbone.model.encoder.stages[0]")


def backbone_rules(policy: str) -> list[Freeze]:
    """The freeze rules a `data.backbone` policy stands for (explicit, so the plan lists what each did)."""
    if policy == "frozen":
        return [Freeze(BACKBONE)]
    if policy == "unfreeze":
        return [Unfreeze(BACKBONE)]
    if policy == "freeze_stage1":
        return [Unfreeze(BACKBONE), *(Freeze(p) for p in STAGE1)]
    raise RecipeError(f"data.backbone must be frozen, unfreeze or freeze_stage1, got {policy!r}.")


def _image_processor(processor: Any) -> Any:
    return getattr(processor, "image_processor", processor)


def display_scale(image: Image.Image, target: int = 256) -> int:
    """How many times to enlarge a small image before drawing on it, so labels stay legible."""
    return max(1, target // max(image.size))


def _config(model: Any) -> Any:
    """The model config inside DDP / DeepSpeed / peft wrappers."""
    while hasattr(model, "module"):
        model = model.module
    return model.config


def _box_normaliser_correction(labels: list[dict[str, Any]], like: Any) -> float:
    """(box count transformers divided by) / (the right one: clamp(global boxes / world, 1))."""
    import torch
    import torch.distributed as dist

    count = torch.tensor([float(sum(len(t["class_labels"]) for t in labels))], device=like.device)
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    if world > 1:
        dist.all_reduce(count)  # every rank computes a loss each step, so every rank is here
    total = float(count.item())
    used = max(total / world / world, 1.0)  # mean over ranks, then / world again (transformers)
    return used / max(total / world, 1.0)


def targets_of(dataset: Any) -> list[ImageBoxes]:
    """Ground truth of a `DetectionDataset` (original pixels)."""
    return [
        ImageBoxes([list(map(float, b)) for b in im.boxes], list(im.labels), im.width, im.height)
        for im in dataset.images
    ]


class DetectionTask(Task[Prediction, DetectionData, DetectionEval]):
    """Boxes per image. Holds the processor after `build` (the post-processing is the processor's)."""

    data_config = DetectionData
    eval_config = DetectionEval
    metrics = MAP_METRICS
    metric_prefixes = (CLASS_AP_PREFIX,)
    default_best_metric = "map"
    greater_is_better = True
    pipeline_tag = "object-detection"

    def __init__(self) -> None:
        self.processor: Any = None
        self.classes: list[str] = []
        self.plot_images, self.plot_threshold = 6, 0.5
        self._train: Any = None
        self._baseline: Any = None

    def _data(self, recipe: Any) -> DetectionData:
        return self.recipe_data(recipe)

    # --------------------------------------------------------------------------------- recipe level

    def categories(self, recipe: Any):
        from trainers.data.source_config import DatasetSource
        from trainers.tasks.detection.data import read_categories, source_categories

        train = self._data(recipe).train
        if isinstance(train, DatasetSource):
            return source_categories(train, "data.train")
        return read_categories(Path(train).expanduser(), "data.train")

    def model_kwargs(self, recipe: Any) -> dict[str, Any]:
        """The train JSON's categories as the model config's labels; without it (a dry-run before the data
        exists) `PLACEHOLDER_LABELS` placeholder categories (`label_set_stand_in` says so)."""
        if self._train_missing(recipe):
            return label_fields([f"category_{i}" for i in range(PLACEHOLDER_LABELS)])
        return label_fields([c.name for c in self.categories(recipe)])

    def _train_missing(self, recipe: Any) -> bool:
        """The train COCO JSON does not exist (a `datasets` source names its own categories)."""
        train = self._data(recipe).train
        return isinstance(train, str) and not Path(train).expanduser().is_file()

    def label_set_stand_in(self, recipe: Any) -> str | None:
        if not self._train_missing(recipe):
            return None
        return (
            f"the categories come from data.train ({self._data(recipe).train}), which is missing: planned with "
            f"a placeholder of {PLACEHOLDER_LABELS} categories; point data.train at your COCO JSON to plan with "
            "its categories."
        )

    def freeze_rules(self, recipe: Any) -> list[tuple[Freeze, str]]:
        policy = self._data(recipe).backbone
        return [(rule, f"data.backbone={policy!r}") for rule in backbone_rules(policy)]

    def compute_loss(self, model: Any, inputs: dict[str, Any]) -> Any:
        """DETR's loss with its box terms normalised by the global box count over the world size.

        transformers (5.23) averages the box count over ranks (`accelerate.utils.reduce`, a mean) and then
        divides by the world size again, so on N ranks the L1 and GIoU terms come out N times too large
        (2 ranks: twice the loss of 1 rank on the same data). This recombines the model's own loss terms with
        the normaliser of the original DETR, clamp(sum of boxes / world, 1): 1 process is unchanged.

        The loss and its Hungarian matching run in float32 outside autocast, on float32 copies of the logits
        and boxes, so a bf16 run's matching never depends on which ops autocast's lists keep in float32 (on
        CPU today softmax and cdist already are; a bf16 cost matrix, 8 bits of mantissa, would tie near-equal
        costs and flip matches between steps).
        """
        config = _config(model)
        if "labels" not in inputs or getattr(config, "auxiliary_loss", False):  # auxiliary: the model's own
            return model(**inputs).loss
        import torch
        from transformers.loss.loss_for_object_detection import ForObjectDetectionLoss

        labels = inputs["labels"]
        outputs = model(**{k: v for k, v in inputs.items() if k != "labels"})
        with torch.autocast(outputs.logits.device.type, enabled=False):
            loss, terms, _ = ForObjectDetectionLoss(
                outputs.logits.float(), labels, outputs.logits.device, outputs.pred_boxes.float(), config
            )
        scale = _box_normaliser_correction(labels, loss)
        return (
            terms["loss_ce"]
            + config.bbox_loss_coefficient * scale * terms["loss_bbox"]
            + config.giou_loss_coefficient * scale * terms["loss_giou"]
        )

    def check_evaluation(self, evaluation: Any) -> None:
        if isinstance(evaluation, DetectionEval) and not 0.0 <= evaluation.plot_threshold <= 1.0:
            raise RecipeError(
                f"evaluation.plot_threshold is a score in [0, 1], got {evaluation.plot_threshold}."
            )

    # ------------------------------------------------------------------------------------ run level

    def build(self, recipe: Any, processor: Any) -> TaskData:
        from trainers.tasks.detection.data import AugmentedDetection, DetectionDataset, DetrCollator

        data = self._data(recipe)
        categories = self.categories(recipe)
        self.processor = _image_processor(processor)
        self.classes = [c.name for c in categories]
        if isinstance(recipe.evaluation, DetectionEval):
            self.plot_images, self.plot_threshold = (
                recipe.evaluation.plot_images,
                recipe.evaluation.plot_threshold,
            )

        def split(source: Any, key: str, limit: int | None = None) -> DetectionDataset:
            return DetectionDataset(source, key, categories, data.images, data.on_bad_sample, limit)

        train = split(data.train, "data.train", data.max_train_samples)
        self._train = train
        augmented = data.augment is not None and data.augment.active
        return TaskData(
            train=AugmentedDetection(train, data.augment, recipe.training.seed) if augmented else train,
            val=split(data.val, "data.val", data.max_val_samples),
            collator=DetrCollator(self.processor),
            eval_collator=DetrCollator(self.processor, with_sizes=True),
            test=split(data.test, "data.test") if data.test is not None else None,
        )

    def _post_process(self, outputs: Any, sizes: Any) -> list[Prediction]:
        results = self.processor.post_process_object_detection(outputs, threshold=0.0, target_sizes=sizes)
        return [
            {
                "boxes": r["boxes"].float().tolist(),
                "scores": r["scores"].float().tolist(),
                "labels": r["labels"].tolist(),
            }
            for r in results
        ]

    def predict(self, model: Any, batch: dict[str, Any]) -> list[Prediction]:
        outputs = model(pixel_values=batch["pixel_values"], pixel_mask=batch["pixel_mask"])
        return self._post_process(outputs, batch["orig_sizes"].tolist())

    def score(self, predictions: Mapping[int, Prediction], dataset: Any) -> dict[str, float]:
        targets = targets_of(dataset)
        preds = [
            ImageBoxes(p["boxes"], p["labels"], t.width, t.height, scores=p["scores"])
            for p, t in zip((predictions[i] for i in range(len(dataset))), targets, strict=True)
        ]
        if self._baseline is None and self._train is not None and dataset is not self._train:
            from trainers.tasks.detection.baseline import mean_box_baseline

            self._baseline = mean_box_baseline(self._train.images, dataset.images, dataset.classes, targets)
        return coco_box_metrics(preds, targets, dataset.classes)

    def baseline(self) -> Any:
        return self._baseline

    def save_artifacts(self, predictions: Mapping[int, Prediction], dataset: Any, directory: Path) -> None:
        """`boxes.png`: true (left) and predicted (right, score >= plot_threshold) boxes on the first val images;
        `predictions.json`: the first images' boxes above the threshold."""
        from trainers.data.draw import TRUE_COLOUR, comparison_grid, draw_boxes

        panels, rows = [], []
        for i in range(min(self.plot_images, len(dataset))):
            item, truth, pred = dataset[i], dataset.images[i], self._confident(predictions[i])
            panels.append(
                (
                    draw_boxes(
                        item["image"],
                        truth.boxes,
                        truth.labels,
                        dataset.classes,
                        colour=TRUE_COLOUR,
                        scale=display_scale(item["image"]),
                    ),
                    self.draw(item["image"], pred, dataset.classes),
                )
            )
            rows.append({"file": str(truth.path), **pred})
        comparison_grid(panels, directory / "boxes.png")
        (directory / "predictions.json").write_text(json.dumps(rows, indent=1) + "\n")

    def _confident(self, prediction: Prediction) -> Prediction:
        keep = [i for i, s in enumerate(prediction["scores"]) if s >= self.plot_threshold]
        return {k: [prediction[k][i] for i in keep] for k in ("boxes", "scores", "labels")}

    def table_rows(self, predictions: Mapping[int, Prediction], dataset: Any, n: int = 8) -> list[TableRow]:
        """Image with predicted (score >= plot_threshold) and true boxes; class names as text."""
        rows = []
        for i, p in list(predictions.items())[:n]:
            truth, confident = dataset.images[i], self._confident(p)
            picture = open_rgb(truth.path)
            names = [dataset.classes[c] for c in confident["labels"]]
            true_names = [dataset.classes[c] for c in truth.labels]
            rows.append(
                TableRow(
                    picture,
                    ", ".join(names),
                    ", ".join(true_names),
                    [(*map(float, b), name) for b, name in zip(confident["boxes"], names, strict=True)],
                    [
                        (*map(float, b), name)
                        for b, name in zip(truth.boxes.tolist(), true_names, strict=True)
                    ],
                )
            )
        return rows

    def examples(
        self, predictions: Mapping[int, Prediction], dataset: Any, n: int = 10
    ) -> list[dict[str, Any]]:
        out = []
        for i, p in list(predictions.items())[:n]:
            confident = self._confident(p)
            out.append(
                {
                    "file": str(dataset.images[i].path),
                    "predicted": [dataset.classes[c] for c in confident["labels"]],
                    "true": [dataset.classes[c] for c in dataset.images[i].labels],
                }
            )
        return out

    # -------------------------------------------------------------------------- images (trainers.predict)

    def predict_images(
        self, model: Any, processor: Any, images: list[Image.Image], options: dict[str, str]
    ) -> list[dict]:
        """Boxes for plain images (`--threshold`, default 0.5): `{"boxes", "scores", "labels", "names"}`."""
        import torch

        threshold = float(options.get("threshold", 0.5))
        if not 0.0 <= threshold <= 1.0 or math.isnan(threshold):
            raise RecipeError(f"--threshold is a score in [0, 1], got {options.get('threshold')}.")
        self.processor = _image_processor(processor)
        config = getattr(model, "config", None)
        labels = getattr(config, "id2label", None) or {}
        self.classes = [labels[i] for i in sorted(labels)]
        self.plot_threshold = threshold
        rgb = [im.convert("RGB") for im in images]
        batch = self.processor(images=rgb, return_tensors="pt")
        device = next(model.parameters()).device
        with torch.no_grad():
            outputs = model(
                pixel_values=batch["pixel_values"].to(device), pixel_mask=batch["pixel_mask"].to(device)
            )
        results = self._post_process(outputs, [[im.height, im.width] for im in rgb])
        confident = [self._confident(r) for r in results]
        return [
            {**r, "names": [self.classes[c] if c < len(self.classes) else str(c) for c in r["labels"]]}
            for r in confident
        ]

    def draw(self, image: Image.Image, prediction: dict, classes: list[str] | None = None) -> Image.Image:
        from trainers.data.draw import draw_boxes

        return draw_boxes(
            image,
            prediction["boxes"],
            prediction["labels"],
            classes or self.classes,
            scores=prediction["scores"],
            width=max(1, round(min(image.size) / 100)),
            scale=display_scale(image),
        )
