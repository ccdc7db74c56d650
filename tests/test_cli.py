"""`launch.py` as a user runs it: dry-run plan numbers, clear errors, recipe loading."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, SHAPES
from trainers.errors import RecipeError
from trainers.recipe import load_recipe

RECIPE = "recipes/blip_progressive.py"
# The real recipe's data (data/captions/) is not shipped; these point it at the shipped sample set instead.
SHAPES_DATA = (
    f"data.train={SHAPES}/train.json",
    f"data.val={SHAPES}/val.json",
    f"data.images={SHAPES}/images",
)


def launch(*args: str, timeout: int = 180, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "launch.py", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def no_model_env(tmp_path: Path) -> dict[str, str]:
    """A machine without the pretrained weights: an empty Hugging Face home (cache, accelerate config)."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "HF_HUB_CACHE")
    }
    return {**env, "HF_HOME": str(tmp_path / "hf"), "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}


def last_paragraph(stderr: str) -> str:
    """The last non-empty block of stderr, which must be our single `error:` paragraph."""
    blocks = [b.strip() for b in re.split(r"\n\s*\n", stderr) if b.strip()]
    assert blocks and blocks[-1].startswith("error: ") and "\n" not in blocks[-1], stderr[-3000:]
    assert stderr.count("error: ") == 1, stderr[-3000:]
    return blocks[-1]


def tiny_vision_layer_params(h: int = 32, i: int = 64) -> int:
    """One BLIP vision encoder layer: qkv, projection, two LayerNorms, fc1, fc2."""
    return (h * 3 * h + 3 * h) + (h * h + h) + 2 * (2 * h) + (h * i + i) + (i * h + h)


def tiny_vision_total(h: int = 32, layers: int = 12, image: int = 32, patch: int = 4) -> int:  # the demo spec
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
    assert row(out, "vision_model") == [
        tiny_vision_total(),
        3 * layer,
        6 * layer,
    ]  # last 3 now, 6 more by stages
    total, trainable, scheduled = row(out, "TOTAL")
    assert scheduled == 6 * layer
    text_total = row(out, "text_decoder")[0]
    assert total == tiny_vision_total() + text_total
    assert trainable == 3 * layer + text_total
    assert f"trainable now: {trainable:,} / {total:,}" in out
    # param groups with their learning rates: vision x0.1, text x1.0 of the demo lr 1e-3
    assert re.search(r"\] vision/decay\s+lr=0\.0001 ", out)
    assert re.search(r"\] text/decay\s+lr=0\.001 ", out)
    assert re.search(r"stage 0: opens at epoch 3 .*layers\[-6:\] -> 36 tensors, " + f"{3 * layer:,}", out)
    assert "epochs: 12" in out  # the override reached the plan
    assert "launcher: in-process" in out


def test_dry_run_of_the_real_recipe_counts_blip_base_without_weights():
    result = launch(RECIPE, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "Salesforce/blip-image-captioning-base" in result.stdout
    assert "architecture only" in result.stdout
    total = row(result.stdout, "TOTAL")[0]
    assert (
        220_000_000 < total < 230_000_000
    )  # BLIP base: 224M unique (247M with the tied LM head counted twice)


def test_training_the_real_recipe_without_weights_gives_a_clear_error(tmp_path):
    """README, Running a recipe: `python launch.py recipes/blip_progressive.py --no-wandb`, as written."""
    result = launch(RECIPE, "--no-wandb", env=no_model_env(tmp_path))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    message = last_paragraph(result.stderr)  # the data is checked before any model is loaded or downloaded
    assert "Data not found" in message and "data/captions/train.json" in message and "--demo" in message
    with_data = launch(RECIPE, "--no-wandb", *SHAPES_DATA, env=no_model_env(tmp_path))
    assert with_data.returncode == 2 and "Traceback" not in with_data.stderr
    message = last_paragraph(with_data.stderr)
    assert "Salesforce/blip-image-captioning-base" in message and "HF_HUB_CACHE" in message
    assert "--demo" in message


def test_readme_dry_run_with_overrides_as_written():
    """README, Running a recipe: `python launch.py recipes/blip_progressive.py training.epochs=3
    data.train=/data/train.json --dry-run` prints the plan with both overrides applied."""
    result = launch(RECIPE, "training.epochs=3", "data.train=/data/train.json", "--dry-run")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "epochs: 3" in result.stdout
    overrides = next(ln for ln in result.stdout.splitlines() if ln.startswith("overrides:"))
    assert "training.epochs=3" in overrides and "data.train=/data/train.json" in overrides
    assert "architecture only" in result.stdout  # no weights here: counted on the meta device


@pytest.mark.parametrize(
    "flags",
    [
        ("--launcher", "accelerate", "--nproc", "8"),
        ("--launcher", "deepspeed", "--zero", "3", "--nproc", "8"),
        ("--launcher", "torchrun", "--zero", "2", "--offload", "--nproc", "8"),
    ],
    ids=["accelerate", "deepspeed-zero3", "torchrun-zero2-offload"],
)
def test_readme_distributed_commands_without_weights_fail_before_any_worker_starts(flags, tmp_path):
    """README, Distributed runs, as written: without the pretrained weights `launch.py` says so once and exits 2
    before it starts the launcher (instead of 8 workers each finding out)."""
    as_written = launch(RECIPE, *flags, env=no_model_env(tmp_path))
    assert as_written.returncode == 2, as_written.stderr[-3000:]
    assert "launching: " not in as_written.stdout and "Data not found" in last_paragraph(as_written.stderr)
    result = launch(RECIPE, *flags, *SHAPES_DATA, env=no_model_env(tmp_path))
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "launching: " not in result.stdout
    message = last_paragraph(result.stderr)
    assert "'Salesforce/blip-image-captioning-base' is not in the local Hugging Face cache" in message
    assert "model.id=" in message and "--demo" in message


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((RECIPE, "training.epoch=3", "--dry-run"), "Did you mean: training.epochs"),
        ((RECIPE, "training.lr=fast", "--dry-run"), "expected a number"),
        (("recipes/nope.py", "--dry-run"), "does not exist"),
        (
            (RECIPE, "--demo", "--dry-run", "early_stopping.metric=bleu"),
            "is not a metric the captioning task produces",
        ),
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


def test_errors_found_before_training_import_neither_torch_nor_transformers(tmp_path):
    """Recipe, override and data errors come before any heavy import: a launcher's parent process and a user's
    typo cost a fraction of a second, not the ~10 s of importing torch, transformers and peft."""
    probe = (
        "import sys, launch\n"
        "status = launch.main(sys.argv[1:])\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'peft', 'deepspeed') if m in sys.modules)\n"
        "print('heavy:', heavy, 'status:', status)\n"
    )
    runs = [
        [RECIPE],
        [RECIPE, "training.epoch=3"],
        [RECIPE, "--launcher", "torchrun", "--nproc", "2"],
        ["recipes/vit_lora.py", "--demo", "data.augment.hflip=2"],
        ["recipes/vit_lora.py", "data.val=nowhere"],
    ]
    for argv in runs:
        result = subprocess.run(
            [sys.executable, "-c", probe, *argv],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            env=no_model_env(tmp_path),
        )
        assert result.stdout.strip().splitlines()[-1] == "heavy: [] status: 2", (
            argv,
            result.stdout,
            result.stderr,
        )
