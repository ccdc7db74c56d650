"""The demo recipe end to end, as `make demo` runs it: tiny BLIP on the shipped shapes captions.

One real run (subprocess, W&B offline on), then checks on everything it must leave behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import ROOT


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "run"
    env = {**os.environ, "WANDB_MODE": "offline"}
    result = subprocess.run(
        [sys.executable, "launch.py", "recipes/blip_progressive.py", "--demo", f"output_dir={out}"],
        cwd=ROOT, capture_output=True, text=True, timeout=900, env=env,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert f"results in {out}" in result.stdout
    return out


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.slow
def test_val_score_rises_from_first_to_best_epoch(demo_run: Path):
    records = read_jsonl(demo_run / "metrics.jsonl")
    scores = [r["eval"]["val_score"] for r in records]
    assert len(scores) >= 5
    assert max(scores) > scores[0] + 0.1, scores
    summary = json.loads((demo_run / "training_summary.json").read_text())
    assert summary["best_metric"]["value"] == pytest.approx(max(scores))


@pytest.mark.slow
def test_run_writes_every_promised_output(demo_run: Path):
    for name in ["recipe.json", "plan.json", "freeze_report.txt", "metrics.jsonl", "training_summary.json",
                 "plots/train_loss.png", "plots/val_metrics.png", "best/model.safetensors", "best/config.json",
                 "best/tokenizer.json"]:
        assert (demo_run / name).is_file(), name
    summary = json.loads((demo_run / "training_summary.json").read_text())
    params = summary["params"]
    assert 0 < params["trainable_at_start"] < params["trainable_at_end"] <= params["total"]
    assert summary["stages_opened_at_step"] == {"0": 60, "1": 120}  # epochs 3 and 6 at 20 steps/epoch
    assert len(summary["seconds_per_epoch"]) == summary["epochs_completed"]
    assert summary["config"]["training"]["lr"] == 1e-3
    assert summary["final_metrics"]["val_score"] is not None
    first = read_jsonl(demo_run / "metrics.jsonl")[0]
    assert {"meteor", "rouge_l", "cider_d", "val_score", "loss"} <= set(first["eval"])
    assert first["lr"]["vision/decay"] == pytest.approx(first["lr"]["text/decay"] * 0.1)


@pytest.mark.slow
def test_wandb_offline_run_files_exist(demo_run: Path):
    runs = list((demo_run / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1 and runs[0].stat().st_size > 0


@pytest.mark.slow
def test_best_checkpoint_reloads_with_the_real_loader_and_captions(demo_run: Path):
    from trainers.models.blip import load_blip_captioning

    model, processor = load_blip_captioning(str(demo_run / "best"))
    from PIL import Image

    image = Image.open(ROOT / "data/shapes/images" / "val_00000.png").convert("RGB")
    inputs = processor(images=image, return_tensors="pt")
    with torch.no_grad():
        ids = model.generate(**inputs, num_beams=5, max_length=20)
    text = processor.decode(ids[0], skip_special_tokens=True)
    assert any(color in text for color in ("red", "green", "blue", "yellow")), text
