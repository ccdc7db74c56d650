"""Top-down keypoint estimation (ViTPose): COCO keypoints JSON + an image folder → heatmap model, PCK / pixel
error / OKS AP.

Importing the package loads only the recipe dataclasses; the task itself (torch, PIL) is `TASK`, resolved
on use with `trainers.tasks.interface.load_task`.
"""

from trainers.tasks.pose.config import COCO_SKELETON, PoseData, PoseEval, Skeleton

TASK = "trainers.tasks.pose.task:PoseTask"

__all__ = ["COCO_SKELETON", "TASK", "PoseData", "PoseEval", "Skeleton"]
