"""The LoRA recipe's demo end to end: it learns, and leaves a stock peft adapter and a merged model behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT


@pytest.fixture(scope="module")
def lora_demo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lora_demo") / "run"
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    result = subprocess.run(
        [sys.executable, "launch.py", "recipes/blip_lora.py", "--demo", "--no-wandb", f"output_dir={out}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return out


@pytest.mark.slow
def test_lora_demo_learns_and_writes_adapter_and_merged_model(lora_demo: Path):
    records = [
        json.loads(line) for line in (lora_demo / "metrics.jsonl").read_text().splitlines() if line.strip()
    ]
    scores = [r["eval"]["val_score"] for r in records]
    assert max(scores) > scores[0] + 0.1, scores
    for name in (
        "best/adapter_model.safetensors",
        "best/adapter_config.json",
        "best/tokenizer.json",
        "merged/model.safetensors",
        "merged/config.json",
    ):
        assert (lora_demo / name).is_file(), name
    summary = json.loads((lora_demo / "training_summary.json").read_text())
    lora = summary["lora"]
    assert 0 < lora["adapter_bytes"] < lora["full_model_bytes"]
    assert lora["modules_to_save"] == ["text_decoder.cls"]
    assert set(lora["targets_by_tower"]) == {"vision_model", "text_decoder"}
    adapter_config = json.loads((lora_demo / "best/adapter_config.json").read_text())
    assert adapter_config["r"] == 16 and adapter_config["lora_alpha"] == 32
