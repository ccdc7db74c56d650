"""Top-down keypoint estimation as a `Task`: the heatmap loss (ours: ViTPose has none), predict = forward +
the processor's `post_process_pose_estimation` back into image pixels, score = PCK@0.2, mean pixel error
and OKS AP (pycocotools), a PNG of true vs predicted skeletons per evaluation, and the mean-pose baseline."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from trainers.data.source_config import DatasetSource
from trainers.errors import RecipeError
from trainers.tasks.interface import TableRow, Task, TaskData
from trainers.tasks.pose.config import (
    BEST_METRICS,
    COCO_SKELETON,
    PCK_THRESHOLD,
    PoseData,
    PoseEval,
    Skeleton,
)

Prediction = dict[str, list]  # {"keypoints": [[x, y], ...] image pixels, "scores": [...]}
# The fallback without `--box`, said once: a person filling a small part of the image then gets a skeleton
# stretched over the whole frame, and the user should know why.
WHOLE_IMAGE_NOTICE = (
    "pose: no --box given, so each image is one person box covering the whole image; pass --box x,y,w,h "
    "(pixels) for a person who fills only part of it, or --boxes FILE / --detector RUN for several people."
)
CROPS_PER_FORWARD = 64  # person crops per forward pass of plain-image prediction (many people per image)
METRICS = ("pck", "mean_pixel_error", "oks_ap", "oks_ap_50", "oks_ap_75")


def _image_processor(processor: Any) -> Any:
    return getattr(processor, "image_processor", processor)


def input_size(processor: Any) -> tuple[int, int]:
    """(width, height) of the model's input crop, as the processor states it."""
    size = _image_processor(processor).size
    return int(size["width"]), int(size["height"])


def heatmap_loss(heatmaps: Any, labels: Any, size: tuple[int, int]) -> Any:
    """mmpose's `JointsMSELoss(use_target_weight=True)` against Gaussian (sigma 2) UDP targets built on the
    predicted heatmaps' own grid from `labels` (B, K, 3: crop pixels, visibility); `size` is the crop's
    (width, height). Invisible and off-grid joints weigh 0."""
    from trainers.tasks.pose.heatmaps import heatmap_targets, joints_mse_loss

    heatmaps = heatmaps.float()
    height, width = heatmaps.shape[-2:]
    targets, weights = heatmap_targets(labels.float(), size, (width, height))
    return joints_mse_loss(heatmaps, targets, weights)


def skeleton_scores(
    keypoints: Sequence[np.ndarray],
    records: Sequence[Any],
    sigmas: Sequence[float],
    confidences: Sequence[float] | None = None,
) -> dict[str, float]:
    """PCK@0.2, mean pixel error and OKS AP of (K, 2) image-pixel predictions against the records."""
    from trainers.tasks.pose.metrics import PoseInstance, mean_pixel_error, oks_ap, pck

    truth = [PoseInstance(r.keypoints, r.box, r.image_id) for r in records]
    scores = confidences if confidences is not None else [1.0] * len(records)
    preds = [
        PoseInstance(
            np.column_stack([np.asarray(k, dtype=np.float64)[:, :2], np.ones(len(k))]),
            r.box,
            r.image_id,
            float(s),
        )
        for k, r, s in zip(keypoints, records, scores, strict=True)
    ]
    return {
        "pck": pck(preds, truth, PCK_THRESHOLD),
        "mean_pixel_error": mean_pixel_error(preds, truth),
        **oks_ap(preds, truth, sigmas),
    }


class PoseTask(Task[Prediction, PoseData, PoseEval]):
    """Keypoints per instance box. Holds the processor and the skeleton after `build`."""

    data_config = PoseData
    eval_config = PoseEval
    metrics = METRICS
    default_best_metric = "pck"
    greater_is_better = True
    pipeline_tag = "keypoint-detection"

    def __init__(self) -> None:
        self.processor: Any = None
        self.skeleton: Skeleton | None = None
        self.plot_images = 6
        self._train: Any = None
        self._baseline: Any = None
        self._told_whole_image = False
        self._box_options: tuple[dict[str, str], Any] | None = None  # check_options' parse, reused per batch
        self._loaded_detector: tuple[Any, Any] | None = None

    def _data(self, recipe: Any) -> PoseData:
        return self.recipe_data(recipe)

    # --------------------------------------------------------------------------------- recipe level

    def best_metric(self, evaluation: Any = None) -> tuple[str, bool]:
        return (evaluation.best_metric if isinstance(evaluation, PoseEval) else "pck"), True

    def check_evaluation(self, evaluation: Any) -> None:
        if isinstance(evaluation, PoseEval) and evaluation.best_metric not in BEST_METRICS:
            raise RecipeError(
                f"evaluation.best_metric must be one of {', '.join(BEST_METRICS)}, got "
                f"{evaluation.best_metric!r}."
            )

    def resolve_skeleton(self, recipe: Any) -> Skeleton:
        from trainers.tasks.pose.data import resolve_skeleton

        data = self._data(recipe)
        if isinstance(data.train, DatasetSource):  # no category names the keypoints: the recipe's or COCO's
            self.skeleton = data.skeleton or COCO_SKELETON
            self.skeleton.validate("data.skeleton")
        else:
            self.skeleton = resolve_skeleton(data.skeleton, Path(data.train).expanduser())
        return self.skeleton

    def model_kwargs(self, recipe: Any) -> dict[str, Any]:
        """One heatmap per keypoint. Without the train JSON (a `--dry-run` before the data is in place) the
        declared skeleton, or COCO's, stands in; the run itself stops on the missing data."""
        data = self._data(recipe)
        if isinstance(data.train, DatasetSource) or Path(data.train).expanduser().is_file():
            skeleton = self.resolve_skeleton(recipe)
        else:
            skeleton = data.skeleton or COCO_SKELETON
        names = list(skeleton.keypoints)
        return {
            "num_labels": len(names),
            "id2label": dict(enumerate(names)),
            "label2id": {n: i for i, n in enumerate(names)},
        }

    def compute_loss(self, model: Any, inputs: dict[str, Any]) -> Any:
        """The heatmap MSE (`heatmap_loss`); `VitPoseForPoseEstimation` raises on labels, so they stay here."""
        pixels = inputs["pixel_values"]
        outputs = model(pixel_values=pixels)
        return heatmap_loss(outputs.heatmaps, inputs["labels"], (pixels.shape[-1], pixels.shape[-2]))

    # ------------------------------------------------------------------------------------ run level

    def build(self, recipe: Any, processor: Any) -> TaskData:
        from trainers.tasks.pose.data import (
            SOURCE_CATEGORY,
            PoseCollator,
            PoseDataset,
            augmented,
            keypoint_categories,
        )

        data = self._data(recipe)
        skeleton = self.resolve_skeleton(recipe)
        categories = (
            [SOURCE_CATEGORY]
            if isinstance(data.train, DatasetSource)
            else sorted(keypoint_categories(Path(data.train).expanduser(), "data.train"))
        )
        self.processor = _image_processor(processor)
        size = input_size(self.processor)
        if isinstance(recipe.evaluation, PoseEval):
            self.plot_images = recipe.evaluation.plot_images

        def split(source: Any, key: str, limit: int | None = None) -> PoseDataset:
            return PoseDataset(
                source, key, skeleton, categories, size, data.images, data.on_bad_sample, limit
            )

        train = split(data.train, "data.train", data.max_train_samples)
        self._train = train
        active = data.augment is not None and data.augment.active
        return TaskData(
            train=augmented(train, data.augment, recipe.training.seed) if active else train,
            val=split(data.val, "data.val", data.max_val_samples),
            collator=PoseCollator(self.processor),
            eval_collator=PoseCollator(self.processor, with_boxes=True),
            test=split(data.test, "data.test") if data.test is not None else None,
        )

    def _decode(self, heatmaps: Any, boxes: Sequence[Sequence[float]]) -> list[Prediction]:
        """The processor's post-processing (argmax + DARK refinement, UDP inverse of the crop) in image pixels."""
        from transformers.models.vitpose.modeling_vitpose import VitPoseEstimatorOutput

        results = self.processor.post_process_pose_estimation(
            VitPoseEstimatorOutput(heatmaps=heatmaps.detach().float().cpu()),
            boxes=[[list(map(float, b))] for b in boxes],
        )
        return [
            {
                "keypoints": r[0]["keypoints"].double().tolist(),
                "scores": r[0]["scores"].double().reshape(-1).tolist(),
            }
            for r in results
        ]

    def predict(self, model: Any, batch: dict[str, Any]) -> list[Prediction]:
        outputs = model(pixel_values=batch["pixel_values"])
        return self._decode(outputs.heatmaps, batch["boxes"])

    def score(self, predictions: Mapping[int, Prediction], dataset: Any) -> dict[str, float]:
        records = dataset.records
        preds = [predictions[i] for i in range(len(dataset))]
        sigmas = (self.skeleton or dataset.skeleton).sigmas
        if self._baseline is None and self._train is not None and dataset is not self._train:
            from trainers.tasks.pose.baseline import mean_pose_baseline

            self._baseline = mean_pose_baseline(
                self._train.records, records, lambda kps: skeleton_scores(kps, records, sigmas)
            )
        return skeleton_scores(
            [np.asarray(p["keypoints"]) for p in preds],
            records,
            sigmas,
            [float(np.mean(p["scores"])) for p in preds],
        )

    def baseline(self) -> Any:
        return self._baseline

    def save_artifacts(self, predictions: Mapping[int, Prediction], dataset: Any, directory: Path) -> None:
        """`skeletons.png`: true (left, green) and predicted (right, red) skeletons on the first val crops;
        `predictions.json`: those instances' keypoints in image pixels."""
        from trainers.data.draw import comparison_grid

        panels, rows = [], []
        for i in range(min(self.plot_images, len(dataset))):
            panels.append(self._drawn(predictions[i], dataset, i))
            record = dataset.records[i]
            rows.append({"file": str(record.path), "annotation_id": record.annotation_id, **predictions[i]})
        comparison_grid(
            panels, directory / "skeletons.png", title="left: true skeleton (green)   right: predicted (red)"
        )
        (directory / "predictions.json").write_text(json.dumps(rows, indent=1) + "\n")

    def _drawn(self, prediction: Prediction, dataset: Any, index: int) -> tuple[Image.Image, Image.Image]:
        """The instance's crop with its true skeleton (green) and with the predicted one (red), enlarged."""
        from trainers.tasks.pose.data import apply_matrix, crop_geometry
        from trainers.tasks.pose.draw import PREDICTED_COLOUR, TRUE_COLOUR, draw_skeleton

        links = (self.skeleton or dataset.skeleton).link_indices()
        item, record = dataset[index], dataset.records[index]
        crop = item["image"]
        scale = max(1, 192 // max(crop.size))
        truth = np.asarray(item["keypoints"])[:, :2] - 0.5
        predicted = apply_matrix(crop_geometry(record.box, crop.size), np.asarray(prediction["keypoints"]))
        labelled = list(record.keypoints[:, 2] > 0)
        return (
            draw_skeleton(crop, truth, links, TRUE_COLOUR, scale, labelled),
            draw_skeleton(crop, predicted, links, PREDICTED_COLOUR, scale),
        )

    def table_rows(self, predictions: Mapping[int, Prediction], dataset: Any, n: int = 8) -> list[TableRow]:
        """The instance crop with the true (green, left) and predicted (red, right) keypoints drawn, the
        prediction's mean pixel error over the labelled keypoints."""
        rows = []
        errors = {e["index"]: e for e in self._errors(predictions, dataset, n)}
        for i, prediction in list(predictions.items())[:n]:
            truth, predicted = self._drawn(prediction, dataset, i)
            side_by_side = Image.new("RGB", (truth.width * 2 + 4, truth.height), "white")
            side_by_side.paste(truth, (0, 0))
            side_by_side.paste(predicted, (truth.width + 4, 0))
            error = errors[i]
            rows.append(
                TableRow(
                    side_by_side,
                    f"{len(prediction['keypoints'])} keypoints (red, right), mean error "
                    f"{error['mean_pixel_error']} px",
                    f"{error['labelled']} labelled keypoints (green, left) of {dataset.records[i].path.name}",
                    extra={"mean_pixel_error": error["mean_pixel_error"]},
                )
            )
        return rows

    def _errors(self, predictions: Mapping[int, Prediction], dataset: Any, n: int) -> list[dict[str, Any]]:
        out = []
        for i, p in list(predictions.items())[:n]:
            record = dataset.records[i]
            labelled = record.keypoints[:, 2] > 0
            error = np.linalg.norm(
                np.asarray(p["keypoints"])[labelled] - record.keypoints[labelled, :2], axis=1
            )
            out.append(
                {
                    "index": i,
                    "file": str(record.path),
                    "annotation_id": record.annotation_id,
                    "labelled": int(labelled.sum()),
                    "mean_pixel_error": round(float(error.mean()), 2) if len(error) else None,
                }
            )
        return out

    def examples(
        self, predictions: Mapping[int, Prediction], dataset: Any, n: int = 10
    ) -> list[dict[str, Any]]:
        keep = ("file", "annotation_id", "mean_pixel_error")
        return [{k: e[k] for k in keep} for e in self._errors(predictions, dataset, n)]

    # -------------------------------------------------------------------------- images (trainers.predict)

    def _names(self, model: Any) -> list[str]:
        labels = getattr(getattr(model, "config", None), "id2label", None) or {}
        return [labels[i] for i in sorted(labels)]

    def check_options(self, options: dict[str, str], files: Sequence[Path]) -> None:
        """The box options (`--box`, `--boxes FILE`, `--detector RUN`, ...) read and checked before any model
        is loaded (`trainers.tasks.pose.person_boxes`); kept for the `predict_files` calls that follow."""
        self._box_options = None
        self._boxes_for(options, files)

    def _boxes_for(self, options: dict[str, str], files: Sequence[Path] | None) -> Any:
        """The parsed box options, read once per options; the images `--boxes` gives no box are named in one
        stderr line when it is read (by `check_options`: every image of the run)."""
        from trainers.tasks.pose.person_boxes import parse_box_options, say_without_boxes

        if self._box_options is None or self._box_options[0] != options:
            plan = parse_box_options(options, files, self.finished_runs)
            self._box_options = (dict(options), plan)
            if plan.source == "boxes":
                say_without_boxes(
                    [f.name for f in files or [] if f.name not in plan.by_file],
                    f"in --boxes {plan.boxes_file} (at --box-threshold {plan.threshold})",
                )
        return self._box_options[1]

    def predict_images(
        self, model: Any, processor: Any, images: list[Image.Image], options: dict[str, str]
    ) -> list[dict]:
        """Keypoints for plain images without file names (the app): see `predict_files`."""
        return self.predict_files(model, processor, images, None, options)

    def predict_files(
        self,
        model: Any,
        processor: Any,
        images: list[Image.Image],
        files: Sequence[Path] | None,
        options: dict[str, str],
    ) -> list[dict]:
        """Keypoints for plain images. One instance each, in `--box x,y,w,h` (pixels), default the whole
        image: `{"box", "keypoints": [[x, y], ...], "scores", "names"}`. With `--boxes FILE` or `--detector
        RUN`, one instance per person box: `{"instances": [{"box", "box_score", "keypoints", "scores"}, ...],
        "names"}` (an image without a box: `"instances": []`, named on stderr)."""
        from trainers.tasks.pose.person_boxes import PersonBox, say_without_boxes

        self.processor = _image_processor(processor)
        names = self._names(model)
        if self.skeleton is None or list(self.skeleton.keypoints) != names:
            coco = names == list(COCO_SKELETON.keypoints)
            self.skeleton = COCO_SKELETON if coco else Skeleton(tuple(names), sigmas=(1.0,) * len(names))
        rgb = [im.convert("RGB") for im in images]
        plan = self._boxes_for(options, files)
        if plan.source == "boxes":
            boxes = [plan.by_file.get(f.name, []) for f in files or []]
        elif plan.source == "detector":
            boxes = self._detector(plan).boxes(rgb)
            shown = [f.name for f in files] if files is not None else [f"image {i}" for i in range(len(rgb))]
            say_without_boxes(
                [name for name, found in zip(shown, boxes, strict=True) if not found],
                f"from --detector {plan.detector} (label {plan.person_label!r}, at --box-threshold "
                f"{plan.threshold})",
            )
        else:
            boxes = [[PersonBox(plan.box or (0.0, 0.0, float(im.width), float(im.height)))] for im in rgb]
            if plan.source is None and not self._told_whole_image:
                self._told_whole_image = True  # once per process: predict calls this batch by batch
                print(WHOLE_IMAGE_NOTICE, file=sys.stderr)
        keypoints = iter(self._keypoints(model, rgb, boxes))
        out = []
        for image_boxes in boxes:
            instances = [{"box": list(b.box), "box_score": b.score, **next(keypoints)} for b in image_boxes]
            if plan.multi:
                out.append({"instances": instances, "names": names})
            else:
                instance = instances[0]
                instance.pop("box_score")
                out.append({**instance, "names": names})
        return out

    def _detector(self, plan: Any) -> Any:
        from trainers.tasks.pose.person_boxes import Detector

        key = (plan.detector, plan.person_label, plan.threshold)
        if self._loaded_detector is None or self._loaded_detector[0] != key:
            detector = Detector(plan.detector, plan.person_label, plan.threshold, self.finished_runs)
            self._loaded_detector = (key, detector)
        return self._loaded_detector[1]

    def _keypoints(self, model: Any, images: list[Image.Image], boxes: list[list[Any]]) -> list[Prediction]:
        """One prediction per box, in order (crops forwarded `CROPS_PER_FORWARD` at a time)."""
        import torch

        crops = [
            (image, b.box) for image, image_boxes in zip(images, boxes, strict=True) for b in image_boxes
        ]
        device = next(model.parameters()).device
        out: list[Prediction] = []
        for start in range(0, len(crops), CROPS_PER_FORWARD):
            part = crops[start : start + CROPS_PER_FORWARD]
            flat = [list(box) for _, box in part]
            batch = self.processor(
                images=[im for im, _ in part], boxes=[[b] for b in flat], return_tensors="pt"
            )
            with torch.no_grad():
                outputs = model(pixel_values=batch["pixel_values"].to(device))
            out += self._decode(outputs.heatmaps, flat)
        return out

    def draw(self, image: Image.Image, prediction: dict) -> Image.Image:
        """The predicted skeleton; with `--boxes` / `--detector`, every instance's, each over its box."""
        from trainers.tasks.pose.draw import PREDICTED_COLOUR, draw_skeleton, draw_skeletons

        links = self.skeleton.link_indices() if self.skeleton is not None else ()
        scale = max(1, 256 // max(image.size))
        if "instances" not in prediction:
            return draw_skeleton(image, np.asarray(prediction["keypoints"]), links, PREDICTED_COLOUR, scale)
        instances = prediction["instances"]
        return draw_skeletons(
            image,
            [np.asarray(i["keypoints"]) for i in instances],
            links,
            PREDICTED_COLOUR,
            scale,
            boxes=[i["box"] for i in instances],
        )
