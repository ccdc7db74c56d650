"""The model card a run leaves in `best/README.md`: its metadata parses with huggingface_hub, names the metrics
(best validation, test, the no-model baseline), the data (sizes, listing fingerprints) and the command that
reproduces the run; `best/` loads with the stock transformers classes the card names; and running the card's
command again (into another folder) gives bit-identical weights."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from trainers.reporting.model_card import listing_fingerprint

RECIPE = "recipes/vitpose_lora.py"
ARGS = [
    "--demo",
    "--no-wandb",
    "lora=none",
    "training.epochs=1",
    "data.max_train_samples=16",
    "data.max_val_samples=8",
    "data.test=data/stick_figures/val.json",  # the val file again: a test split to report
]


def launch(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600, env=env
    )


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("card") / "run"
    result = launch("launch.py", RECIPE, *ARGS, f"output_dir={out}")
    assert result.returncode == 0, result.stderr[-4000:]
    return out


def test_the_card_metadata_parses_and_names_the_metrics_data_and_command(run_dir: Path):
    from huggingface_hub import ModelCard
    from huggingface_hub.repocard_data import model_index_to_eval_results

    card = ModelCard.load(run_dir / "best" / "README.md")
    meta = card.data.to_dict()
    summary = json.loads((run_dir / "training_summary.json").read_text())
    recipe = json.loads((run_dir / "recipe.json").read_text())
    assert meta["base_model"] == recipe["model"]["id"] and meta["demo_model"] is True
    assert meta["base_model_revision"] == "default branch (not pinned)"  # the recipe pins none
    assert (meta["task"], meta["family"], meta["pipeline_tag"]) == ("pose", "vitpose", "keypoint-detection")
    assert meta["library_name"] == "transformers" and meta["training"]["lora"] is None

    results = meta["results"]
    assert results["best_metric"] == summary["best_metric"]["name"] == "pck"
    assert results["validation"]["pck"] == summary["best_metric"]["value"]
    test = {k.removeprefix("test_"): v for k, v in summary["test_metrics"].items()}
    assert results["test"]["pck"] == test["pck"] and results["test"]["oks_ap"] == test["oks_ap"]
    assert results["baseline"]["pck"] == summary["baseline"]["pck"]  # the mean-pose baseline beside them
    assert (
        results["before_training"]["pck"]
        == summary["start_metrics"]["pck"]
        == summary["best_metric"]["at_start"]
    )
    assert results["baseline_kind"].startswith("mean training pose in every val box: pck=")
    model_index = model_index_to_eval_results(meta["model-index"])[1]
    assert {(r.dataset_split, r.metric_type) for r in model_index} >= {("validation", "pck"), ("test", "pck")}
    assert "| **pck** |" in card.text  # the Markdown table, the checkpoint's metric in bold

    data = meta["data"]
    assert data["samples"]["train"] == 16
    sources = {s["key"]: s for s in data["sources"]}
    assert set(sources) >= {"data.train", "data.val", "data.images"}
    for key, source in sources.items():
        assert {k: source[k] for k in ("files", "bytes", "sha256")} == listing_fingerprint(
            ROOT / source["path"]
        ), key

    command = meta["reproduce"]
    assert command == (
        f"python launch.py {RECIPE} --demo lora=none training.epochs=1 data.max_train_samples=16 data.max_val_samples=8 "
        f"data.test=data/stick_figures/val.json output_dir={run_dir} reporting.wandb=False"  # --no-wandb's
    )


def test_best_loads_with_the_stock_classes_the_card_names(run_dir: Path):
    import torch
    import transformers
    from huggingface_hub import ModelCard

    meta = ModelCard.load(run_dir / "best" / "README.md").data.to_dict()
    assert meta["model_class_is_stock"] is True
    model_cls = getattr(transformers, meta["model_class"])
    processor = getattr(transformers, meta["processor_class"]).from_pretrained(run_dir / "best")
    model, info = model_cls.from_pretrained(run_dir / "best", output_loading_info=True)
    assert model_cls.__module__.startswith("transformers.") and type(model) is model_cls
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    assert model.config.num_labels == 11  # the stick figures' keypoints
    from PIL import Image

    pixels = processor(images=[Image.new("RGB", (48, 64))], boxes=[[[0, 0, 48, 64]]], return_tensors="pt")
    with torch.no_grad():
        heatmaps = model.eval()(pixel_values=pixels["pixel_values"]).heatmaps
    assert heatmaps.shape[1] == 11 and torch.isfinite(heatmaps).all()


def test_the_cards_command_reproduces_the_run(run_dir: Path, tmp_path: Path):
    from huggingface_hub import ModelCard

    command = shlex.split(ModelCard.load(run_dir / "best" / "README.md").data.to_dict()["reproduce"])
    assert command[:2] == ["python", "launch.py"]
    again = tmp_path / "again"
    result = launch(*command[1:], f"output_dir={again}")  # a later override wins: another folder
    assert result.returncode == 0, result.stderr[-4000:]
    first, second = ((d / "best" / "model.safetensors").read_bytes() for d in (run_dir, again))
    assert first == second
