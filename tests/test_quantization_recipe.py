"""`model.quantization` wired through a recipe: a tiny 4-bit QLoRA run of `recipes/vit_lora.py --demo` trains on
CPU with its base weights quantized and bit-identical, and the recipe errors (no LoRA, ZeRO-3, a trained-fully
module that does not exist) stop before any training."""

from __future__ import annotations

import pytest
import torch

from conftest import ROOT
from trainers.errors import RecipeError
from trainers.recipe import load_recipe

RECIPE = ROOT / "recipes" / "vit_lora.py"


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("WANDB_MODE", "disabled")


def test_a_4bit_qlora_run_trains_the_adapter_and_head_and_leaves_the_base_bit_identical(tmp_path):
    from trainers.lora.quantize import quantized_modules
    from trainers.run import complete_run, setup_run

    recipe = load_recipe(
        RECIPE,
        [
            "model.quantization=4bit",
            "training.epochs=1",
            "reporting.plots=false",
            f"output_dir={tmp_path / 'run'}",
        ],
        demo=True,
    )
    ctx = setup_run(recipe)
    core = ctx.prepared.core
    quantized = quantized_modules(core)
    assert quantized and set(quantized.values()) == {"Linear4bit"}
    assert not any(
        name.startswith("classifier") for name in quantized
    )  # the trained head stays full precision
    assert "loaded 4bit" in ctx.prepared.source
    params = dict(ctx.trainer.model.named_parameters())
    base = {n: p.detach().clone() for n, p in params.items() if not p.requires_grad}
    trained = {n: p.detach().clone() for n, p in params.items() if p.requires_grad}
    assert any(".q_proj.base_layer.weight" in n for n in base) and any("lora_A" in n for n in trained)
    complete_run(ctx)
    after = dict(ctx.trainer.model.named_parameters())
    assert all(torch.equal(after[n], t) for n, t in base.items())  # packed 4-bit bytes unchanged
    assert any(not torch.equal(after[n], t) for n, t in trained.items() if "lora_B" in n)
    assert any(not torch.equal(after[n], t) for n, t in trained.items() if "modules_to_save" in n)


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["model.quantization=4bit", "lora=none"], "model.quantization='4bit' needs a `lora` section"),
        (["model.quantization=8bit", "launch.zero=3"], "cannot run under DeepSpeed ZeRO-3"),
        (["model.quantization=3bit"], "model.quantization='3bit': must be one of 4bit, 8bit"),
    ],
)
def test_recipe_errors_at_load(overrides, fragment):
    with pytest.raises(RecipeError) as error:
        load_recipe(RECIPE, overrides, demo=True)
    assert fragment in str(error.value) and "\n" not in str(error.value)


def test_a_trained_fully_module_that_does_not_exist_cannot_be_kept_in_full_precision(tmp_path):
    from trainers.run import setup_run

    recipe = load_recipe(
        RECIPE,
        ["model.quantization=4bit", "lora.modules_to_save=classifer", f"output_dir={tmp_path / 'run'}"],
        demo=True,
    )
    with pytest.raises(RecipeError, match="'classifer' .* is not a module of ViTForImageClassification"):
        setup_run(recipe)
