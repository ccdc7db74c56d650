"""The ViT family through the launcher: `recipes/vit_lora.py --demo` trains in-process and beats the majority
baseline, its adapter reloads with stock peft to identical logits, `--dry-run` counts what peft counts, and
bad input stops with one paragraph naming the file and key (exit status 2)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from PIL import Image
from test_rerun_end_to_end import launch_in_process

from conftest import ROOT
from trainers.recipe import load_recipe

RECIPE = "recipes/vit_lora.py"
TINY = ROOT / "data" / "tiny_classes"
FAST = ["training.epochs=3", "reporting.plots=false"]  # the demo augments: 2 epochs reach ~0.47


@pytest.fixture(autouse=True)
def _at_root(monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("WANDB_MODE", "disabled")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """One short demo run (3 epochs), kept in memory for the checks below."""
    from trainers.run import complete_run, setup_run

    out = tmp_path_factory.mktemp("vit") / "run"
    recipe = load_recipe(ROOT / RECIPE, [*FAST, f"output_dir={out}"], demo=True)
    ctx = setup_run(recipe)
    summary = complete_run(ctx)
    return ctx, summary, out


def majority_share(split: Path) -> float:
    counts = Counter(p.parent.name for p in split.rglob("*.png"))
    return max(counts.values()) / sum(counts.values())


def test_the_demo_beats_the_majority_baseline(demo):
    ctx, summary, out = demo
    majority = majority_share(TINY / "val")  # 16 of 64 per class: 0.25, chance too
    assert majority == 0.25
    assert (
        summary["best_metric"]["name"] == "accuracy"
    )  # from the task: the recipe's early stopping watches it
    assert summary["best_metric"]["value"] >= majority + 0.25, summary["best_metric"]
    baseline = summary["baseline"]  # the run computes the same prior and says the model beats it
    assert (baseline["accuracy"], baseline["mean_class_accuracy"]) == (majority, 0.25)
    assert baseline["train_size"] == 192 and baseline["beats_baseline"] is True
    assert ctx.prepared.core.config.id2label == {0: "circle", 1: "cross", 2: "square", 3: "triangle"}
    assert (out / "eval" / "confusion_matrix.png").stat().st_size > 0
    matrix = json.loads((out / "eval" / "confusion_matrix.json").read_text())
    assert sum(map(sum, matrix["matrix"])) == 64 and matrix["classes"][3] == "triangle"
    assert "class_accuracy/cross" in summary["final_metrics"]


def test_the_adapter_reloads_with_stock_peft_to_identical_logits(demo, tmp_path):
    from peft import PeftModel
    from transformers import ViTForImageClassification

    from trainers.models.vit import build_tiny_vit

    ctx, summary, out = demo
    labels = {k: getattr(ctx.prepared.core.config, k) for k in ("id2label", "label2id")}
    base, _ = build_tiny_vit(
        ctx.recipe.model.demo, seed=ctx.recipe.training.seed, **labels
    )  # the run's start
    base.save_pretrained(tmp_path / "base")
    reloaded = PeftModel.from_pretrained(
        ViTForImageClassification.from_pretrained(tmp_path / "base"), out / "best"
    )
    pixels = torch.stack([ctx.data.val[i]["pixel_values"] for i in range(8)])
    trained = ctx.trainer.model.eval()
    with torch.no_grad():
        assert torch.equal(reloaded.eval()(pixel_values=pixels).logits, trained(pixel_values=pixels).logits)
        assert not torch.equal(base.eval()(pixel_values=pixels).logits, trained(pixel_values=pixels).logits)


def test_dry_run_trainable_count_is_peft_s_own():
    from peft import LoraConfig, get_peft_model

    from trainers.models.vit import TinyVitSpec, build_tiny_vit

    result = launch_in_process(RECIPE, "--demo", "--dry-run")
    assert result.returncode == 0, result.stderr[-2000:]
    line = next(ln for ln in result.stdout.splitlines() if ln.startswith("trainable now:"))
    planned = int(line.split()[2].replace(",", ""))
    model, _ = build_tiny_vit(TinyVitSpec(), num_labels=4)
    config = LoraConfig(
        r=16, lora_alpha=32, target_modules=["q_proj", "v_proj"], modules_to_save=["classifier"]
    )
    trainable, _ = get_peft_model(model, config).get_nb_trainable_parameters()
    assert planned == trainable > 0


def png(path: Path, colour=(200, 30, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), colour).save(path)
    return path


def image_folder(root: Path, per_class: int = 4) -> Path:
    for label, colour in (("circle", (200, 30, 30)), ("cross", (30, 30, 200))):
        for i in range(per_class):
            png(root / label / f"{i}.png", colour)
    return root


def error_of(result) -> str:
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("error: ")]
    assert lines, result.stderr[-3000:]
    return lines[-1]


def run_demo(tmp_path: Path, *overrides: str):
    return launch_in_process(
        RECIPE, "--demo", *FAST, "training.batch_size=2", f"output_dir={tmp_path / 'out'}", *overrides
    )


def test_a_class_folder_without_images(tmp_path):
    train = image_folder(tmp_path / "train")
    (train / "square").mkdir()
    message = error_of(
        run_demo(tmp_path, f"data.train={train}", f"data.val={image_folder(tmp_path / 'val')}")
    )
    assert f"{train / 'square'}: class folder 'square'" in message and "data.train" in message


def test_a_listed_label_that_is_not_a_class(tmp_path):
    train = image_folder(tmp_path / "train")
    png(tmp_path / "a.png")
    (tmp_path / "val.csv").write_text("image,label\na.png,circle\na.png,hexagon\n")
    message = error_of(run_demo(tmp_path, f"data.train={train}", f"data.val={tmp_path / 'val.csv'}"))
    assert f"{tmp_path / 'val.csv'}:3: label 'hexagon' in data.val is not among the classes" in message


def test_num_labels_disagreeing_with_the_data():
    message = error_of(launch_in_process(RECIPE, "--demo", "data.num_labels=5", "--dry-run"))
    assert "data.num_labels=5, but the train split" in message and "Set data.num_labels=4" in message


def test_an_unreadable_image_stops_the_run_under_fail(tmp_path):
    train = image_folder(tmp_path / "train")
    broken = train / "cross" / "0.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    message = error_of(
        run_demo(tmp_path, f"data.train={train}", f"data.val={image_folder(tmp_path / 'val')}")
    )
    assert f"{broken}: cannot read the image" in message and "data.train" in message
    assert 'on_bad_sample="skip"' in message


def test_an_unreadable_image_is_skipped_and_counted_under_skip(tmp_path):
    from trainers.models.vit import TinyVitSpec, build_tiny_processor
    from trainers.tasks.registry import get_task

    train = image_folder(tmp_path / "train")
    (train / "cross" / "0.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    recipe = load_recipe(
        ROOT / RECIPE,
        [f"data.train={train}", f"data.val={image_folder(tmp_path / 'val')}", "data.on_bad_sample=skip"],
        demo=True,
    )
    data = get_task(recipe.data).build(recipe, build_tiny_processor(TinyVitSpec()))
    assert len(data.train) == 7 and data.train.bad_samples.summary()["skipped"] == 1


def test_a_metric_the_task_does_not_produce():
    message = error_of(launch_in_process(RECIPE, "--demo", "early_stopping.metric=rouge_l", "--dry-run"))
    assert message.startswith(
        "error: command line: early_stopping.metric: 'rouge_l' is not a metric the classification task"
    )
    assert "accuracy" in message


def test_a_family_that_does_not_serve_the_task():
    message = error_of(launch_in_process(RECIPE, "--demo", "model.family=blip", "--dry-run"))
    assert message.startswith("error: command line: model.family: family 'blip' serves the captioning task")
    assert "classification" in message


def test_dry_run_of_the_real_model_counts_its_architecture_and_lora_none_is_the_full_fine_tune():
    """README, Add a model family: the real ViT-B/16 on the meta device, as written; `lora=none`: all trainable."""
    result = launch_in_process(RECIPE, "data.labels=cat,dog,bird", "--dry-run")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "trainable now: 592,131 / 86,393,094 (0.69%)" in result.stdout
    assert "adapter size: 2.26 MiB (LoRA 2.25 MiB + modules_to_save 0.01 MiB) vs full model 327.30 MiB" in (
        result.stdout
    )
    assert "best_metric: accuracy (max)" in result.stdout
    full = launch_in_process(RECIPE, "data.labels=cat,dog,bird", "lora=none", "--dry-run")
    assert full.returncode == 0, full.stderr[-2000:]
    line = next(ln for ln in full.stdout.splitlines() if ln.startswith("trainable now:"))
    trainable, total = (int(x.replace(",", "")) for x in line.split()[2:5:2])
    assert trainable == total == 85_798_656 + 3 * 768 + 3  # ViT-B/16 backbone + a 3-class head
