"""The chat recipes' real-size parameter counts that docs/models/vlm-chat.md states, counted again on the meta
device from the architectures `trainers/models/vlm_chat.py` declares (PaliGemma-3B: 2,923,466,480, the
checkpoint's published 2.92B, once SigLIP's unused attention-pooling head is left out as PaliGemma's config does)."""

from __future__ import annotations

import re

import pytest

from conftest import ROOT
from trainers.models.registry import get_family
from trainers.recipe import load_recipe

TABLE_ROW = re.compile(r"^\| `(\w+)` \| [^|]+ \| ([\d,]+)[^|]*\|", re.MULTILINE)


def documented_totals() -> dict[str, int]:
    text = (ROOT / "docs" / "models" / "vlm-chat.md").read_text()
    text = text.split("## Real-size counts", 1)[1].split("\n## ", 1)[0]
    return {recipe: int(total.replace(",", "")) for recipe, total in TABLE_ROW.findall(text)}


def test_the_table_lists_every_shipped_chat_recipe():
    assert set(documented_totals()) == {"qwen2_vl_lora", "smolvlm_progressive", "paligemma_lora"}


@pytest.mark.parametrize("recipe_name", sorted(documented_totals()))
def test_the_documented_base_count_is_the_meta_device_count(recipe_name, monkeypatch):
    monkeypatch.chdir(ROOT)
    recipe = load_recipe(f"recipes/{recipe_name}.py", [])
    model = get_family(recipe.model.family).meta_model(recipe.model.id)
    assert sum(p.numel() for p in model.parameters()) == documented_totals()[recipe_name]


@pytest.mark.parametrize("recipe_name", sorted(documented_totals()))
def test_the_image_token_lies_inside_the_language_models_vocabulary(recipe_name, monkeypatch):
    """The declared architecture's image placeholder must be a real row of the embedding (SmolVLM's <image> is
    49,190 of 49,280; Idefics3Config's default, 128,257, is Llama-3's and would index past the table)."""
    monkeypatch.chdir(ROOT)
    recipe = load_recipe(f"recipes/{recipe_name}.py", [])
    config = get_family(recipe.model.family).meta_model(recipe.model.id).config
    token = getattr(config, "image_token_id", None) or getattr(config, "image_token_index", None)
    assert token is not None and 0 <= token < config.get_text_config().vocab_size
