"""The DETR family through the launcher: `recipes/detr_lora.py --demo` trains in-process and beats both its
first evaluation and the mean-box baseline, its adapter reloads with stock peft to identical outputs,
`--dry-run` counts what peft counts, `python -m trainers.predict` writes boxes for a folder of images (and
draws them), bad annotations stop the launcher with exit status 2, and the LoRA-vs-full report has the
real-size DETR-R50 row."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from test_rerun_end_to_end import launch_in_process

from conftest import ROOT
from trainers.recipe import load_recipe

RECIPE = "recipes/detr_lora.py"
TINY = ROOT / "data" / "tiny_boxes"
# the first 160 training images (data/tiny_boxes' set) at the constant lr the demo had on them: the test runs in
# seconds (the demo reads all 1,280, with a 100-step warm-up the test's 40 steps would not finish)
FAST = [
    "training.epochs=4",
    "data.max_train_samples=160",
    "training.lr_scheduler=constant",
    "training.warmup_steps=0",
    "reporting.plots=false",
]


@pytest.fixture(autouse=True)
def _at_root(monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("WANDB_MODE", "disabled")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """One short demo run (4 epochs of 10 steps), kept in memory for the checks below."""
    from trainers.run import complete_run, setup_run

    out = tmp_path_factory.mktemp("detr") / "run"
    recipe = load_recipe(ROOT / RECIPE, [*FAST, f"output_dir={out}"], demo=True)
    ctx = setup_run(recipe)
    summary = complete_run(ctx)
    return ctx, summary, out


@pytest.mark.slow
def test_the_demo_beats_its_start_and_the_mean_box_baseline(demo):
    ctx, summary, out = demo
    evals = [e for e in ctx.trainer.state.log_history if "eval_map" in e]
    first, best = evals[0]["eval_map"], summary["best_metric"]["value"]
    baseline = summary["baseline"]
    print(f"map: first eval {first:.4f}, best {best:.4f}, mean-box baseline {baseline['map']:.4f}")
    assert summary["best_metric"]["name"] == "map"
    assert best > max(first, baseline["map"]) and baseline["beats_baseline"] is True
    assert {"map_50", "map_75", "ap_circle", "ap_square", "ap_triangle"} <= set(summary["final_metrics"])
    assert ctx.prepared.core.config.id2label == {0: "circle", 1: "square", 2: "triangle"}
    assert (out / "eval" / "boxes.png").stat().st_size > 0
    rows = json.loads((out / "eval" / "predictions.json").read_text())
    assert len(rows) == 6 and all(set(r) == {"file", "boxes", "scores", "labels"} for r in rows)
    assert summary["data"]["train"]["boxes_dropped_by_augmentation"] >= 0


@pytest.mark.slow
def test_the_adapter_reloads_with_stock_peft_to_identical_outputs(demo, tmp_path):
    from peft import PeftModel
    from transformers import DetrForObjectDetection

    from trainers.models.detr import build_tiny_detr

    ctx, _, out = demo
    labels = {k: getattr(ctx.prepared.core.config, k) for k in ("id2label", "label2id")}
    base, _ = build_tiny_detr(
        ctx.recipe.model.demo, seed=ctx.recipe.training.seed, **labels
    )  # the run's start
    base.save_pretrained(tmp_path / "base")
    reloaded = PeftModel.from_pretrained(
        DetrForObjectDetection.from_pretrained(tmp_path / "base"), out / "best"
    )
    batch = ctx.data.eval_collator([ctx.data.val[i] for i in range(4)])
    inputs = {"pixel_values": batch["pixel_values"], "pixel_mask": batch["pixel_mask"]}
    trained = ctx.trainer.model.eval()
    with torch.no_grad():
        mine, theirs = trained(**inputs), reloaded.eval()(**inputs)
        assert torch.equal(mine.logits, theirs.logits) and torch.equal(mine.pred_boxes, theirs.pred_boxes)
        assert not torch.equal(base.eval()(**inputs).pred_boxes, mine.pred_boxes)


@pytest.mark.slow
def test_predict_writes_boxes_for_a_folder_and_draws_them(demo, tmp_path, capsys):
    from trainers.predict import main

    _, _, out = demo
    images = tmp_path / "imgs"
    images.mkdir()
    for name in ("val_000.png", "val_001.png", "val_002.png"):
        shutil.copy(TINY / "images" / name, images / name)
    preds = tmp_path / "preds.jsonl"
    assert main([str(out), "--images", str(images), "--out", str(preds), "--draw", "--threshold", "0.0"]) == 0
    rows = [json.loads(line) for line in preds.read_text().splitlines()]
    assert [r["file"].rsplit("/", 1)[-1] for r in rows] == ["val_000.png", "val_001.png", "val_002.png"]
    assert all(len(r["boxes"]) == 5 and set(r["names"]) <= {"circle", "square", "triangle"} for r in rows)
    assert sorted(p.name for p in (tmp_path / "preds_drawn").iterdir()) == [
        "val_000.png",
        "val_001.png",
        "val_002.png",
    ]
    assert main([str(out), "--images", str(images), "--out", str(preds), "--threshold"]) == 2
    assert "--threshold needs a value" in capsys.readouterr().err


def test_predict_with_a_task_that_cannot_predict_images(tmp_path, capsys):
    from trainers.predict import main

    run = tmp_path / "run"
    (run / "best").mkdir(parents=True)
    (run / "recipe.json").write_text(json.dumps({"model": {"family": "dual-encoder"}}))
    images = tmp_path / "imgs"
    images.mkdir()
    shutil.copy(TINY / "images" / "val_000.png", images / "a.png")
    assert main([str(run), "--images", str(images), "--out", str(tmp_path / "p.jsonl")]) == 2
    assert "the retrieval task cannot predict plain images" in capsys.readouterr().err


def test_dry_run_trainable_count_is_peft_s_own():
    from peft import LoraConfig, get_peft_model

    from trainers.models.detr import TinyDetrSpec, build_tiny_detr

    result = launch_in_process(RECIPE, "--demo", "--dry-run")
    assert result.returncode == 0, result.stderr[-2000:]
    line = next(ln for ln in result.stdout.splitlines() if ln.startswith("trainable now:"))
    planned = int(line.split()[2].replace(",", ""))
    model, _ = build_tiny_detr(TinyDetrSpec(), num_labels=3)
    model.model.backbone.requires_grad_(
        True
    )  # the demo's data.backbone="unfreeze", trained as a saved module
    config = LoraConfig(
        r=16,
        lora_alpha=32,
        target_modules=["q_proj", "v_proj"],
        modules_to_save=["class_labels_classifier", "bbox_predictor", "model.backbone"],
    )
    trainable, _ = get_peft_model(model, config).get_nb_trainable_parameters()
    assert planned == trainable > 0
    assert "rule: unfreeze model.backbone (from data.backbone='unfreeze')" in result.stdout


def test_a_bad_annotation_stops_the_launcher_with_one_paragraph(tmp_path):
    coco = json.loads((TINY / "train.json").read_text())
    coco["annotations"][3]["category_id"] = 99
    bad = tmp_path / "train.json"
    bad.write_text(json.dumps(coco))
    result = launch_in_process(RECIPE, "--demo", f"data.train={bad}", f"output_dir={tmp_path / 'out'}")
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    line = next(ln for ln in result.stderr.splitlines() if ln.startswith("error: "))
    annotation = coco["annotations"][3]
    assert f"{bad}: annotation id {annotation['id']} (image id {annotation['image_id']}" in line
    assert "category_id 99 is not among the train categories 1 (circle), 2 (square), 3 (triangle)" in line


def test_the_lora_vs_full_report_has_the_real_size_detr_row(tmp_path, capsys):
    from test_lora_vs_full import fake_run

    from trainers.analysis.lora_vs_full import main

    code = main(
        [
            "--lora",
            str(fake_run(tmp_path / "lora", "lora")),
            "--full",
            str(fake_run(tmp_path / "full", "full")),
            "--out",
            str(tmp_path / "report"),
            "--real-size",
            "facebook/detr-resnet-50",
            "--num-labels",
            "91",
            "--family",
            "trainers.models.detr:DETR_DETECTION",
            "--r",
            "8",
            "--targets",
            "q_proj,v_proj",
            "--modules-to-save",
            "class_labels_classifier,bbox_predictor",
        ]
    )
    assert code == 0, capsys.readouterr().err
    real = json.loads((tmp_path / "report" / "lora_vs_full.json").read_text())["real_size"][0]
    # LoRA r8 on 6 encoder (q, v) + 6 decoder (self q, v + cross q, v) projections of 256 -> 256: 36 x 8 x 512
    lora = 36 * 8 * 512
    heads = (256 * 92 + 92) + 2 * (256 * 256 + 256) + (256 * 4 + 4)
    assert real["lora_trainable_params"] == real["peft_trainable_params"] == lora + heads
    print(
        f"DETR-R50: {real['total_params']:,} params, {real['full_bytes'] / 1e6:.1f} MB; adapter "
        f"{real['lora_trainable_params']:,} params, {real['adapter_bytes'] / 1e6:.2f} MB"
    )
