"""Object detection: COCO-format JSON + an image folder → a DETR-style model, COCO mAP through pycocotools.

Importing the package loads only the recipe dataclasses; the task itself (torch, PIL) is `TASK`, resolved
on use with `trainers.tasks.interface.load_task`.
"""

from trainers.tasks.detection.config import BACKBONE_POLICIES, DetectionData, DetectionEval

TASK = "trainers.tasks.detection.task:DetectionTask"

__all__ = ["BACKBONE_POLICIES", "TASK", "DetectionData", "DetectionEval"]
