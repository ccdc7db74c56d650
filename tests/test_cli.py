"""`launch.py` as a user runs it: dry-run plan numbers, clear errors, recipe loading."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from trainers.errors import RecipeError
from trainers.recipe import load_recipe

RECIPE = "recipes/blip_progressive.py"


def launch(*args: str, timeout: int = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "launch.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def tiny_vision_layer_params(h: int = 32, i: int = 64) -> int:
    """One BLIP vision encoder layer: qkv, projection, two LayerNorms, fc1, fc2."""
    return (h * 3 * h + 3 * h) + (h * h + h) + 2 * (2 * h) + (h * i + i) + (i * h + h)


def tiny_vision_total(h: int = 32, layers: int = 12, image: int = 32, patch: int = 8) -> int:
    patches = (image // patch) ** 2
    embeddings = h + (patches + 1) * h + (3 * patch * patch * h + h)
    return embeddings + layers * tiny_vision_layer_params(h) + 2 * h


def row(output: str, module: str) -> list[int]:
    line = next(ln for ln in output.splitlines() if ln.strip().startswith(module + " "))
    return [int(x.replace(",", "")) for x in line.split()[1:4]]


def test_dry_run_prints_exact_plan_numbers_for_the_tiny_model():
    result = launch(RECIPE, "--demo", "--dry-run", "training.epochs=12")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    layer = tiny_vision_layer_params()
    assert row(out, "vision_model") == [tiny_vision_total(), 3 * layer, 6 * layer]  # last 3 now, 6 more by stages
    total, trainable, scheduled = row(out, "TOTAL")
    assert scheduled == 6 * layer
    text_total = row(out, "text_decoder")[0]
    assert total == tiny_vision_total() + text_total
    assert trainable == 3 * layer + text_total
    assert f"trainable now: {trainable:,} / {total:,}" in out
    # param groups with their learning rates: vision x0.1, text x1.0 of the demo lr 1e-3
    assert re.search(r"\] vision/decay\s+lr=0\.0001 ", out)
    assert re.search(r"\] text/decay\s+lr=0\.001 ", out)
    assert re.search(r"stage 0: epoch 3 .*layers\[-6:\] -> 36 tensors, " + f"{3 * layer:,}", out)
    assert "epochs: 12" in out  # the override reached the plan
    assert "launcher: in-process" in out


def test_dry_run_of_the_real_recipe_counts_blip_base_without_weights():
    result = launch(RECIPE, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "Salesforce/blip-image-captioning-base" in result.stdout
    assert "architecture only" in result.stdout
    total = row(result.stdout, "TOTAL")[0]
    assert 220_000_000 < total < 230_000_000  # BLIP base: 224M unique (247M with the tied LM head counted twice)


def test_training_the_real_recipe_without_weights_gives_a_clear_error():
    result = launch(RECIPE, "--no-wandb")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "Salesforce/blip-image-captioning-base" in result.stderr
    assert "--demo" in result.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((RECIPE, "training.epoch=3", "--dry-run"), "Did you mean: training.epochs"),
        ((RECIPE, "training.lr=fast", "--dry-run"), "expected a number"),
        (("recipes/nope.py", "--dry-run"), "does not exist"),
        ((RECIPE, "--demo", "--dry-run", "early_stopping.metric=bleu"), "evaluation does not produce"),
    ],
)
def test_bad_input_exits_non_zero_without_traceback(args, expected):
    result = launch(*args)
    assert result.returncode == 2, result.stdout
    assert "Traceback" not in result.stderr
    assert expected in result.stderr


def test_recipe_file_errors_name_file_and_line(tmp_path: Path):
    broken = tmp_path / "broken.py"
    broken.write_text("from trainers.recipe import Recipe\n\nrecipe = Recipe(\n")
    with pytest.raises(RecipeError, match=r"broken.py:\d+: syntax error"):
        load_recipe(broken)

    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    with pytest.raises(RecipeError, match="must define a module-level `recipe = Recipe"):
        load_recipe(empty)

    raising = tmp_path / "raising.py"
    raising.write_text("from trainers.recipe import Freeze\n\nrule = Freeze()\n")
    with pytest.raises(RecipeError, match=r"raising.py:3: .*exactly one"):
        load_recipe(raising)


def test_demo_overrides_switch_model_and_data():
    recipe = load_recipe(ROOT / RECIPE, demo=True)
    assert recipe.model.use_demo_model
    assert recipe.data.train == "data/shapes/train.json"
    real = load_recipe(ROOT / RECIPE)
    assert not real.model.use_demo_model and real.training.batch_size == 6 and real.training.epochs == 15
