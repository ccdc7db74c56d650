"""Image classification as a `Task`: predict = argmax of the logits, score = one confusion matrix.

The data and metric modules (torch, PIL, torchmetrics) are imported on use: the task is loaded at recipe load
to check metric names, and a recipe error should not wait seconds for torch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainers.tasks.classification.config import CLASS_PREFIX, ClassificationData, ClassificationEval
from trainers.tasks.interface import PLACEHOLDER_LABELS, TableRow, Task, TaskData, label_fields

if TYPE_CHECKING:  # torch and the image code load when a run builds the data, not when a recipe is checked
    from trainers.data.augment import Augment
    from trainers.tasks.classification.baseline import MajorityClassBaseline
    from trainers.tasks.classification.data import ClassifiedImages, ImageTransform


def _image_processor(processor: Any) -> Any:
    """ViT's processor is the image processor itself; multimodal ones wrap it."""
    return getattr(processor, "image_processor", processor)


class ClassificationTask(Task[int, ClassificationData, ClassificationEval]):
    """One class id per image. `train_transform` is the augmentation hook for the train split only."""

    data_config = ClassificationData
    eval_config = ClassificationEval
    metrics = ("accuracy", "mean_class_accuracy")
    metric_prefixes = (CLASS_PREFIX,)
    default_best_metric = "accuracy"
    greater_is_better = True
    pipeline_tag = "image-classification"

    def __init__(self, train_transform: ImageTransform | None = None) -> None:
        self.train_transform = train_transform
        self._train: ClassifiedImages | None = None
        self._baseline: MajorityClassBaseline | None = None

    def _data(self, recipe: Any) -> ClassificationData:
        return self.recipe_data(recipe)

    def model_kwargs(self, recipe: Any) -> dict[str, Any]:
        """The classes as the model config's labels; without the train split (a dry-run before the data
        exists) `data.num_labels` or `PLACEHOLDER_LABELS` placeholder classes (`label_set_stand_in` says so)."""
        from trainers.tasks.classification.data import discover_classes, label_maps

        if self._train_missing(recipe):
            n = self._data(recipe).num_labels or PLACEHOLDER_LABELS
            return label_fields([f"class_{i}" for i in range(n)])
        return label_maps(discover_classes(self._data(recipe)))

    def _train_missing(self, recipe: Any) -> bool:
        data = self._data(recipe)
        return (
            data.labels is None and isinstance(data.train, str) and not Path(data.train).expanduser().exists()
        )

    def label_set_stand_in(self, recipe: Any) -> str | None:
        if not self._train_missing(recipe):
            return None
        data = self._data(recipe)
        count = (
            f"data.num_labels={data.num_labels} placeholder classes"
            if data.num_labels
            else f"a placeholder of {PLACEHOLDER_LABELS} classes"
        )
        return (
            f"the classes come from data.train ({data.train}), which is missing: planned with {count}; "
            "set data.labels=a,b,c (or data.num_labels=N) to plan with yours."
        )

    def build(self, recipe: Any, processor: Any) -> TaskData:
        from trainers.tasks.classification.data import ClassificationCollator, build_dataset, discover_classes

        data = self._data(recipe)
        classes = discover_classes(data)
        images = _image_processor(processor)

        seed = recipe.training.seed if data.augment is not None else 0  # only augmentation draws from it

        def split(
            source: str,
            key: str,
            limit: int | None = None,
            transform: ImageTransform | None = None,
            augment: Augment | None = None,
        ):
            return build_dataset(
                data,
                source,
                key,
                classes,
                images,
                limit=limit,
                transform=transform,
                augment=augment,
                seed=seed,
            )

        self._train = split(
            data.train, "data.train", data.max_train_samples, self.train_transform, data.augment
        )
        self._baseline = None
        return TaskData(
            train=self._train,
            val=split(data.val, "data.val", data.max_val_samples),
            collator=ClassificationCollator(),
            extra_val={name: split(src, f"data.extra_val[{name!r}]") for name, src in data.extra_val.items()},
            test=split(data.test, "data.test") if data.test is not None else None,
        )

    def predict(self, model: Any, batch: dict[str, Any]) -> list[int]:
        logits = model(pixel_values=batch["pixel_values"]).logits
        return logits.argmax(dim=-1).tolist()

    def predict_images(self, model: Any, processor: Any, images: list, options: dict[str, str]) -> list[dict]:
        """Classes for plain images: `{"label", "class_id", "score", "scores"}` (`scores`: the `--top` most
        likely classes with their softmax probability, default 5)."""
        import torch

        from trainers.errors import RecipeError

        top = options.get("top", "5")
        if not str(top).isdigit() or int(top) < 1:
            raise RecipeError(f"--top is a number of classes >= 1, got {top!r}.")
        batch = _image_processor(processor)(images=[im.convert("RGB") for im in images], return_tensors="pt")
        device = next(model.parameters()).device
        with torch.no_grad():
            probs = model(pixel_values=batch["pixel_values"].to(device)).logits.float().softmax(dim=-1)
        labels = getattr(model.config, "id2label", None) or {}
        rows = []
        for row in probs:
            values, ids = row.topk(min(int(top), row.numel()))
            names = [labels.get(int(i), str(int(i))) for i in ids]
            rows.append(
                {
                    "label": names[0],
                    "class_id": int(ids[0]),
                    "score": float(values[0]),
                    "scores": dict(zip(names, map(float, values), strict=True)),
                }
            )
        return rows

    def score(self, predictions: Mapping[int, int], dataset: ClassifiedImages) -> dict[str, float]:
        from trainers.tasks.classification.metrics import confusion_matrix, scores_from_confusion

        cm = confusion_matrix(predictions, dataset.targets, len(dataset.classes))
        if self._baseline is None and self._train is not None and dataset is not self._train:
            from trainers.tasks.classification.baseline import majority_class_baseline

            self._baseline = majority_class_baseline(self._train.targets, dataset.targets, dataset.classes)
        return scores_from_confusion(cm, dataset.classes)

    def baseline(self) -> MajorityClassBaseline | None:
        """The majority training class on every image of the first evaluated set (the val split)."""
        return self._baseline

    def save_artifacts(
        self, predictions: Mapping[int, int], dataset: ClassifiedImages, directory: Path
    ) -> None:
        """`confusion_matrix.png` and `confusion_matrix.json` (classes, counts, metrics) for this evaluation."""
        from trainers.tasks.classification.metrics import (
            confusion_matrix,
            plot_confusion_matrix,
            scores_from_confusion,
        )

        cm = confusion_matrix(predictions, dataset.targets, len(dataset.classes))
        directory.mkdir(parents=True, exist_ok=True)
        plot_confusion_matrix(
            cm, dataset.classes, directory / "confusion_matrix.png", title=dataset.description
        )
        payload = {
            "classes": dataset.classes,
            "matrix": cm.tolist(),
            "metrics": scores_from_confusion(cm, dataset.classes),
        }
        (directory / "confusion_matrix.json").write_text(json.dumps(payload, indent=2) + "\n")

    def table_rows(
        self, predictions: Mapping[int, int], dataset: ClassifiedImages, n: int = 8
    ) -> list[TableRow]:
        """Image, predicted class, true class."""
        classes = dataset.classes
        return [
            TableRow(dataset._load_image(i), classes[p], classes[dataset.targets[i]])
            for i, p in list(predictions.items())[:n]
        ]

    def examples(
        self, predictions: Mapping[int, int], dataset: ClassifiedImages, n: int = 10
    ) -> list[dict[str, Any]]:
        classes = dataset.classes
        return [
            {"file": dataset.name_of(i), "prediction": classes[p], "label": classes[dataset.targets[i]]}
            for i, p in list(predictions.items())[:n]
        ]
