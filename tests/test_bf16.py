"""bf16 (`training.precision=bf16`, CPU autocast here): the losses that need float32 compute in float32, and
a bf16 demo learns and reloads its best model. fp16 without a GPU: tests/test_bad_inputs.py (`fp16-without-gpu`)."""

from __future__ import annotations

import pytest
import torch

from trainers.models.detr import TinyDetrSpec, build_tiny_detr
from trainers.tasks.detection.task import DetectionTask
from trainers.tasks.pose.heatmaps import joints_mse_loss
from trainers.tasks.retrieval.loss import symmetric_infonce

bf16 = torch.autocast("cpu", dtype=torch.bfloat16)


def test_contrastive_logits_are_float32_under_bf16_autocast():
    g = torch.Generator().manual_seed(0)
    text = torch.nn.functional.normalize(torch.randn(16, 32, generator=g), dim=-1).bfloat16()
    image = torch.nn.functional.normalize(torch.randn(16, 32, generator=g), dim=-1).bfloat16()
    scale = torch.tensor(4.6)  # ln 100: open_clip's clamp
    with bf16:
        loss = symmetric_infonce(text, image, scale)
    assert loss.dtype == torch.float32
    assert torch.equal(loss, symmetric_infonce(text.float(), image.float(), scale))  # the fp32 loss exactly


def test_heatmap_mse_is_float32_under_bf16_autocast():
    g = torch.Generator().manual_seed(0)
    predicted = torch.rand(2, 4, 16, 12, generator=g).bfloat16()
    targets, weights = torch.rand(2, 4, 16, 12, generator=g), torch.ones(2, 4)
    with bf16:
        loss = joints_mse_loss(predicted, targets, weights)
    assert loss.dtype == torch.float32
    assert torch.equal(loss, joints_mse_loss(predicted.float(), targets, weights))


def test_detr_matcher_gets_a_float32_cost_matrix_under_bf16_autocast(monkeypatch):
    import transformers.loss.loss_for_object_detection as detr_loss

    seen = []
    real = detr_loss.linear_sum_assignment

    def recording(cost):
        seen.append(cost.dtype)
        return real(cost)

    monkeypatch.setattr(detr_loss, "linear_sum_assignment", recording)
    model, _ = build_tiny_detr(TinyDetrSpec(), seed=0, num_labels=3)
    model.train()
    g = torch.Generator().manual_seed(0)
    labels = [
        {
            "class_labels": torch.tensor([0, 2]),
            "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.3, 0.2]]),
        }
        for _ in range(2)
    ]
    inputs = {"pixel_values": torch.randn(2, 3, 64, 64, generator=g), "labels": labels}
    task = DetectionTask()
    with bf16:
        loss = task.compute_loss(model, inputs)
    assert seen and set(seen) == {torch.float32}, seen
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    with bf16:  # the model's own loss path matches in bf16: what the task avoids
        seen.clear()
        model(**inputs)
    assert seen


@pytest.mark.slow
def test_vit_demo_learns_in_bf16_and_reloads_its_best_model(tmp_path):
    from benchmarks.demo import demo_recipe
    from trainers.run import complete_run, setup_run

    recipe = demo_recipe(
        "vit_lora",
        [
            "training.precision=bf16",
            "training.epochs=3",
            "training.num_workers=0",
            "training.logging_steps=1",
        ],
        output_dir=tmp_path,
    )
    ctx = setup_run(recipe)
    assert ctx.trainer.args.bf16
    start = ctx.trainer.evaluate()["eval_accuracy"]
    summary = complete_run(ctx)
    losses = [e["loss"] for e in ctx.trainer.state.log_history if "loss" in e]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3, losses  # loss falls
    best = summary["best_metric"]["value"]
    assert best > start, (start, best)  # the metric rises above the untrained model's
    reloaded = ctx.trainer.evaluate()["eval_accuracy"]  # the best model, loaded back at the end of train()
    assert reloaded == best, (reloaded, best)
