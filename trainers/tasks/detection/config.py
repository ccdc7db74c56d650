"""Recipe dataclasses of the detection task (no torch import: recipes load fast)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from trainers.data.source_config import DatasetSource
from trainers.data.split_config import AugmentableSplitData, DataPath
from trainers.errors import RecipeError

BackbonePolicy = Literal["frozen", "unfreeze", "freeze_stage1"]
BACKBONE_POLICIES: tuple[str, ...] = ("frozen", "unfreeze", "freeze_stage1")


@dataclass
class DetectionEval:
    """Evaluation settings: batch size (default: the training eval batch), how many val images the per-eval
    PNG of predicted vs true boxes shows, and the score a predicted box needs to be drawn there (mAP itself
    uses every query's box, threshold 0, as COCO does)."""

    batch_size: int | None = None
    plot_images: int = 6
    plot_threshold: float = 0.5


@dataclass
class DetectionData(AugmentableSplitData):
    """COCO-format detection data: per split a JSON file (`images`, `annotations` with xywh `bbox` in pixels,
    `categories`) and the folder its `file_name`s are relative to (`images`, default: the JSON's folder).

    The classes are the train JSON's categories in id order; their names become the model config's
    `id2label` (category ids need not be contiguous). `backbone` states what happens to the convolutional
    backbone, which a transformers ResNet backbone inside DETR comes out of construction fully frozen:
    "frozen" keeps it so (the plan shows an explicit rule), "unfreeze" trains it all, "freeze_stage1"
    trains it except the stem and the first stage, as the original DETR does. `augment` (training split
    only: flip, random resized crop as the random scale, colour jitter) moves the boxes with the pixels; boxes
    a crop leaves under `augment.min_box_area` pixels² are dropped and counted. `on_bad_sample` ("fail" |
    "skip") decides what an unknown category, a box outside its image, or a missing image does; "skip" drops
    the image with all its annotations.

    A split may also be a YOLO export (`trainers.data.yolo`): its `data.yaml` (the recipe key picks the
    `train` / `val` / `test` entry) or its image folder, with `labels/*.txt` beside `images/`.

    Any split may instead be a `DatasetSource` (a `datasets` dataset saved to disk, on the Hub, or a
    JSON / CSV / imagefolder directory), one row per image: `columns.boxes` (e.g. "objects.bbox") in pixels,
    in `box_format` "xywh" (COCO) or "xyxy" (corners), and `columns.box_labels` (e.g. "objects.category"):
    the classes are a ClassLabel feature's names, else the distinct labels sorted.
    """

    task: ClassVar[str] = "detection"
    eval_config: ClassVar[type] = DetectionEval
    data_paths: ClassVar[tuple[DataPath, ...]] = (
        DataPath("train", "COCO JSON, YOLO data.yaml or YOLO image folder", "any"),
        DataPath("val", "COCO JSON, YOLO data.yaml or YOLO image folder", "any"),
        DataPath("test", "COCO JSON, YOLO data.yaml or YOLO image folder", "any"),
        DataPath("images", "image directory", "dir"),
    )
    missing_hint: ClassVar[str] = (
        "Each split is a COCO detection JSON (images, annotations with bbox [x, y, w, h] in pixels, categories) "
        "whose file_names are relative to data.images; point data.train=, data.val= at yours. `--demo` trains "
        "on the shipped data/tiny_boxes."
    )

    train: str | DatasetSource
    val: str | DatasetSource
    test: str | DatasetSource | None = None
    backbone: BackbonePolicy = "frozen"

    def validate(self) -> None:
        if self.backbone not in BACKBONE_POLICIES:
            raise RecipeError(
                f"data.backbone must be one of {', '.join(BACKBONE_POLICIES)} (what to do with the convolutional "
                f"backbone), got {self.backbone!r}."
            )
        super().validate()
