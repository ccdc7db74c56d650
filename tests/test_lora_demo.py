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


@pytest.mark.slow
def test_the_lora_card_names_peft_and_the_adapter_loads_with_stock_peft(lora_demo: Path):
    """`best/README.md` of a LoRA run: library peft, the LoRA settings, and `PeftModel.from_pretrained` (stock
    peft) on the base the run adapted (here the tiny demo build, as the card says) restores the adapter."""
    import torch
    from huggingface_hub import ModelCard
    from peft import PeftModel
    from safetensors.torch import load_file

    from trainers.models.registry import get_family
    from trainers.predict import _demo_spec

    card = ModelCard.load(lora_demo / "best" / "README.md")
    meta = card.data.to_dict()
    recipe = json.loads((lora_demo / "recipe.json").read_text())
    assert meta["library_name"] == "peft" and "lora" in meta["tags"] and meta["demo_model"] is True
    lora = meta["training"]["lora"]
    assert (lora["r"], lora["alpha"], lora["modules_to_save"]) == (16, 32, ["text_decoder.cls"])
    assert "PeftModel.from_pretrained" in card.text and "tiny random-init demo" in card.text
    family = get_family(recipe["model"]["family"])
    base = family.build_tiny()(_demo_spec(family, recipe["model"]["demo"]), seed=recipe["training"]["seed"])[
        0
    ]
    model = PeftModel.from_pretrained(base, str(lora_demo / "best"))
    saved = load_file(lora_demo / "best" / "adapter_model.safetensors")
    loaded = {n: p for n, p in model.named_parameters()}
    lora_names = [n for n in saved if "lora_A" in n]
    assert lora_names
    for name in lora_names:
        key = name.replace(".weight", ".default.weight")
        assert torch.equal(loaded[key], saved[name]), name
