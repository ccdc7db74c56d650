"""Parameter change per module between a run's start and its best model: a frozen module moves exactly 0 (a
full run with the embeddings frozen, and the frozen base of a LoRA run); a LoRA weight's change is B @ A * scale
read from the saved adapter; a base that is not the run's start is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from trainers.analysis.param_change import main, measure

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "vit_lora.py"
SHORT = [
    "data.max_train_samples=32",
    "data.max_val_samples=16",
    "training.batch_size=8",
    "training.epochs=1",
    "reporting.plots=false",
]


@pytest.fixture(autouse=True)
def _at_root(monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("WANDB_MODE", "disabled")


def _train(out: Path, extra: list[str], freeze: list | None = None) -> Path:
    from trainers.recipe import load_recipe
    from trainers.run import run_training

    recipe = load_recipe(RECIPE, [*SHORT, *extra, f"output_dir={out}"], demo=True)
    if freeze is not None:
        recipe.freeze = freeze
    run_training(recipe)
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from trainers.recipe import Freeze

    root = tmp_path_factory.mktemp("param_change")
    return {
        "full": _train(root / "full", ["lora=none"], [Freeze("vit.embeddings")]),
        "lora": _train(root / "lora", []),
    }


def test_full_run_frozen_embeddings_moved_exactly_zero(runs, capsys):
    report = measure(runs["full"])
    assert report.kind == "full" and report.verified
    layers = {c.name: c for c in report.layers}
    assert list(layers) == [
        "vit.embeddings",
        *(f"vit.layers.{i}" for i in range(4)),
        "vit.layernorm",
        "classifier",
    ]
    assert layers["vit.embeddings"].delta_norm == 0.0 and layers["vit.embeddings"].relative == 0.0
    assert all(c.relative > 1e-4 for name, c in layers.items() if name != "vit.embeddings")
    assert sum(c.params for c in report.layers) == sum(c.params for c in report.parameters) == 147_780
    assert main([str(runs["full"]), "--quiet"]) == 0
    assert "| vit.embeddings | 0 | 0 |" in capsys.readouterr().out
    saved = json.loads((runs["full"] / "analysis" / "param_change.json").read_text())
    assert saved["layers"][0] == {**saved["layers"][0], "name": "vit.embeddings", "relative": 0.0}
    assert (runs["full"] / "analysis" / "param_change.png").read_bytes()[:4] == b"\x89PNG"


def test_lora_change_is_the_adapter_delta_and_the_base_stays_at_zero(runs):
    from safetensors.torch import load_file

    report = measure(runs["lora"])
    assert report.kind == "lora" and report.verified
    layers = {c.name: c.relative for c in report.layers}
    assert layers["vit.embeddings"] == 0.0 and layers["vit.layernorm"] == 0.0
    assert all(layers[f"vit.layers.{i}"] > 0 for i in range(4)) and layers["classifier"] > 0
    params = {c.name: c for c in report.parameters}
    assert params["vit.layers.0.attention.k_proj.weight"].delta_norm == 0.0  # not a LoRA target
    adapter = load_file(runs["lora"] / "best" / "adapter_model.safetensors")
    config = json.loads((runs["lora"] / "best" / "adapter_config.json").read_text())
    prefix = "base_model.model.vit.layers.2.attention.q_proj"
    delta = (
        adapter[f"{prefix}.lora_B.weight"]
        @ adapter[f"{prefix}.lora_A.weight"]
        * (config["lora_alpha"] / config["r"])
    )
    measured = params["vit.layers.2.attention.q_proj.weight"].delta_norm
    assert measured == pytest.approx(float(torch.linalg.vector_norm(delta.double())), rel=1e-6)


def test_a_base_that_is_not_the_run_s_start_is_refused(runs, tmp_path, capsys):
    run = tmp_path / "copy"
    run.mkdir()
    for name in ("recipe.json", "start_weights.json"):
        (run / name).write_text((runs["lora"] / name).read_text())
    (run / "best").symlink_to(runs["lora"] / "best")
    recipe = json.loads((run / "recipe.json").read_text())
    recipe["training"]["seed"] += 1  # rebuilds another random init
    (run / "recipe.json").write_text(json.dumps(recipe))
    assert main([str(run)]) == 2
    err = capsys.readouterr().err
    assert "start_weights.json: the base" in err and "is not the model this run started from" in err
    assert "--base DIR" in err and "Traceback" not in err
