"""FSDP2 engine pieces that need no process group: the arguments a recipe gets, which blocks are sharded on
their own, and which embeddings stay in the root group. The 2-rank runs (2 ranks = 1, resume) are in the
shared LoRA job, tests/distributed/test_lora_distributed.py."""

from __future__ import annotations

import dataclasses

from conftest import tiny_recipe
from trainers.fsdp import embeddings_to_hide, fsdp_arguments, wrap_classes
from trainers.plan import load_model, prepare_model
from trainers.recipe import Lora
from trainers.recipe.resolved import resolve_recipe


def _prepared(recipe):
    resolved = resolve_recipe(recipe)
    model, processor, source = load_model(resolved)
    return prepare_model(model, processor, source, resolved).model


def test_fsdp_arguments_only_for_fsdp_on_several_ranks(tmp_path):
    recipe = tiny_recipe(tmp_path)
    assert fsdp_arguments(recipe, 2) == {}
    recipe.launch = dataclasses.replace(recipe.launch, engine="fsdp")
    assert fsdp_arguments(recipe, 1) == {}  # one process: nothing to shard, the Trainer refuses FSDP
    args = fsdp_arguments(recipe, 2)
    assert args["fsdp"] is True and args["fsdp_config"]["version"] == 2
    assert args["fsdp_config"]["state_dict_type"] == "FULL_STATE_DICT"


def test_blip_lora_keeps_its_tied_text_embedding_and_head_in_the_root_group(tmp_path):
    """BLIP through peft: the input embedding is the word embedding tied to the LM head; sharded in a group of
    its own (accelerate's default, or as part of `BlipTextEmbeddings`) FSDP2 refused the run."""
    recipe = tiny_recipe(tmp_path)
    recipe.lora = Lora(target_modules=("query", "value"), r=4, dropout=0.0)
    model = _prepared(recipe)
    assert embeddings_to_hide(model) == ["get_input_embeddings"]
    classes = wrap_classes(model)
    assert "BlipTextEmbeddings" not in classes
    assert {"BlipTextLayer", "BlipEncoderLayer"} <= set(classes)


def test_vit_blocks_are_wrapped_but_not_the_block_holding_the_patch_embedding():
    from benchmarks.demo import demo_recipe

    model = _prepared(demo_recipe("vit_lora"))
    assert wrap_classes(model) == ["ViTLayer"]  # ViTEmbeddings holds the patch embedding accelerate shards
    assert embeddings_to_hide(model) == []
