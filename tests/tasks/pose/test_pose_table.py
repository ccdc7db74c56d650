"""The pose prediction table: each val instance's crop with the true (green) and predicted (red) keypoints
drawn side by side, and the prediction's mean pixel error over the labelled keypoints."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import ROOT


@pytest.fixture(scope="module")
def pose_val():
    from trainers.recipe import load_recipe
    from trainers.tasks.pose.task import PoseTask

    recipe = load_recipe(ROOT / "recipes" / "vitpose_lora.py", demo=True)
    recipe.data.val = str(ROOT / recipe.data.val)
    recipe.data.train = str(ROOT / recipe.data.train)
    recipe.data.images = str(ROOT / recipe.data.images) if recipe.data.images else None
    recipe.data.max_val_samples = 3
    from trainers.models.registry import get_family

    task = PoseTask()
    _model, processor = get_family("vitpose").build_tiny()(
        recipe.model.demo, seed=0, **task.model_kwargs(recipe)
    )
    return task, task.build(recipe, processor).val


def test_rows_show_true_and_predicted_keypoints_and_the_pixel_error(pose_val):
    from trainers.tasks.pose.draw import PREDICTED_COLOUR, TRUE_COLOUR

    task, val = pose_val
    truth = {i: val.records[i].keypoints[:, :2] for i in range(len(val))}
    exact = {i: {"keypoints": k.tolist(), "scores": [1.0] * len(k)} for i, k in truth.items()}
    shifted = {
        i: {"keypoints": (k + [3.0, 4.0]).tolist(), "scores": [1.0] * len(k)} for i, k in truth.items()
    }
    rows = task.table_rows(exact, val)
    assert len(rows) == len(val) == 3
    assert [r.extra["mean_pixel_error"] for r in rows] == [0.0, 0.0, 0.0]
    assert [r.extra["mean_pixel_error"] for r in task.table_rows(shifted, val)] == [5.0, 5.0, 5.0]  # 3-4-5
    row = rows[0]
    labelled = int((val.records[0].keypoints[:, 2] > 0).sum())
    assert (
        row.target.startswith(f"{labelled} labelled keypoints (green, left)")
        and "mean error 0.0 px" in row.prediction
    )
    pixels = np.asarray(row.image)
    half = (pixels.shape[1] - 4) // 2
    left, right = pixels[:, :half], pixels[:, half + 4 :]
    assert (left == TRUE_COLOUR).all(axis=-1).sum() > 0 and (left == PREDICTED_COLOUR).all(axis=-1).sum() == 0
    assert (right == PREDICTED_COLOUR).all(axis=-1).sum() > 0 and (right == TRUE_COLOUR).all(
        axis=-1
    ).sum() == 0
