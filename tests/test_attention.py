"""`model.attn_implementation` per family: what each family's transformers modules support, the same loss with
eager and sdpa attention (fp32, within 1e-5: different kernels, different summation order), a refusal in one
paragraph where the family lacks the kernel, and flash_attention_2 reported (dry-run) or refused (run) on a
machine without flash-attn."""

from __future__ import annotations

import pytest
import torch

from benchmarks.shipped_recipes import one_per_family, shipped_demo_recipes
from conftest import ROOT
from trainers.errors import RecipeError
from trainers.recipe import load_recipe

SHIPPED = shipped_demo_recipes()
FAMILY_RECIPES = one_per_family(SHIPPED.values())
# what each family's transformers classes implement (transformers 5.25): BLIP's modules only eager
SUPPORTS = {
    "blip": ["eager"],
    "dual-encoder": ["eager", "sdpa", "flash_attention_2"],
    "detr": ["eager", "sdpa", "flash_attention_2"],
    "florence2": ["eager", "sdpa", "flash_attention_2"],
    "vit": ["eager", "sdpa", "flash_attention_2"],
    "vitpose": ["eager", "sdpa", "flash_attention_2"],  # in its backbone; the heatmap head has no attention
    **dict.fromkeys(("qwen2-vl", "smolvlm", "paligemma"), ["eager", "sdpa", "flash_attention_2"]),
}
LOSS_TOLERANCE = 1e-5


@pytest.fixture(autouse=True)
def _root(monkeypatch):
    monkeypatch.chdir(ROOT)


def prepared(name: str, impl: str | None, strict: bool = True):
    from trainers.plan import load_model, prepare_model

    overrides = ["training.batch_size=2"] + ([f"model.attn_implementation={impl}"] if impl else [])
    recipe = load_recipe(SHIPPED[name].path, overrides, demo=True)
    torch.manual_seed(recipe.training.seed)
    return recipe, prepare_model(*load_model(recipe), recipe, strict=strict)


def loss_of(recipe, prep) -> float:
    from trainers.recipe.checks import recipe_task

    task = recipe_task(recipe)
    data = task.build(recipe, prep.processor)
    batch = data.collator([data.train[i] for i in range(2)])
    prep.model.eval()  # no dropout: the kernels alone differ
    with torch.no_grad():
        loss = task.compute_loss(prep.model, batch)
        return float(loss if loss is not None else prep.model(**batch).loss)


@pytest.mark.parametrize("name", FAMILY_RECIPES)
def test_each_family_supports_what_it_declares_and_sdpa_matches_eager(name):
    from trainers.models.attention import supported

    family = SHIPPED[name].family
    recipe, default = prepared(name, None)
    assert supported(default.model) == SUPPORTS[family]
    if "sdpa" not in SUPPORTS[family]:
        with pytest.raises(RecipeError) as error:
            prepared(name, "sdpa")
        assert "model.attn_implementation=sdpa" in str(error.value) and "supports: eager" in str(error.value)
        return
    recipe, eager = prepared(name, "eager")
    _, sdpa = prepared(name, "sdpa")
    assert set(eager.attention.in_effect.values()) == {"eager"}
    assert "sdpa" in sdpa.attention.in_effect.values()
    a, b = loss_of(recipe, eager), loss_of(recipe, sdpa)
    print(
        f"{name}: eager {a:.7f} sdpa {b:.7f} diff {abs(a - b):.1e}; sdpa in effect {sdpa.attention.in_effect}"
    )
    assert abs(a - b) <= LOSS_TOLERANCE


def test_flash_attention_is_reported_by_the_dry_run_and_refused_by_the_run():
    _, planned = prepared("vit_lora", "flash_attention_2", strict=False)
    assert planned.attention.problem and "flash-attn" in planned.attention.problem
    assert "a run here would stop" in planned.attention.render()
    with pytest.raises(RecipeError) as error:
        prepared("vit_lora", "flash_attention_2")
    assert "model.attn_implementation=sdpa" in str(error.value)
