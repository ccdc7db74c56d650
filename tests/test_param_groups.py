"""Declared parameter groups reach the optimizer with the declared learning rates and weight decay."""

from __future__ import annotations

import pytest

from conftest import tiny_recipe
from trainers.errors import FreezeTargetError
from trainers.optim.param_groups import build_param_groups
from trainers.plan import load_model, prepare_model
from trainers.recipe import Freeze, ParamGroup, Stage, Unfreeze
from trainers.run import setup_run


def recipe_with_groups(tmp_path):
    recipe = tiny_recipe(tmp_path / "run", epochs=3, lr=1e-3, weight_decay=0.05)
    recipe.freeze = [Freeze("vision_model"), Unfreeze("vision_model.encoder.layers[-2:]")]
    recipe.stages = [Stage(epoch=1, unfreeze="vision_model.encoder.layers[-4:]", lr_mult=0.5)]
    recipe.param_groups = [
        ParamGroup("vision", match=r"^vision_model\.", lr_mult=0.1),
        ParamGroup("embeddings", match=r"embeddings", lr_mult=0.01, weight_decay=0.0),
    ]
    return recipe


def test_optimizer_groups_have_declared_lrs_and_no_decay_on_bias_and_layernorm(tmp_path):
    ctx = setup_run(recipe_with_groups(tmp_path))
    optimizer = ctx.trainer.create_optimizer()
    named = {id(p): n for n, p in ctx.prepared.model.named_parameters()}
    by_name = {g["name"]: g for g in optimizer.param_groups}

    assert by_name["vision/decay"]["lr"] == pytest.approx(1e-4)
    assert by_name["vision/stage0/decay"]["lr"] == pytest.approx(5e-4)  # the stage's own LR rule
    assert by_name["default/decay"]["lr"] == pytest.approx(1e-3)
    assert by_name["embeddings/decay"]["lr"] == pytest.approx(1e-5)
    assert by_name["embeddings/decay"]["weight_decay"] == 0.0
    assert by_name["default/decay"]["weight_decay"] == 0.05
    assert by_name["vision/stage0/decay"]["weight_decay"] == 0.0  # gated: no decay until the stage opens

    for group in optimizer.param_groups:
        assert group["params"], f"empty group {group['name']}"
        names = [named[id(p)] for p in group["params"]]
        if group["name"].endswith("/no_decay"):
            assert all(
                "bias" in n or "LayerNorm" in n or "layernorm" in n or "layer_norm" in n for n in names
            ), names
            assert group["weight_decay"] == 0.0
        else:
            assert not any(n.endswith(".bias") for n in names)

    in_groups = [named[id(p)] for g in optimizer.param_groups for p in g["params"]]
    trainable = [n for n, p in ctx.prepared.model.named_parameters() if p.requires_grad]
    assert sorted(in_groups) == sorted(trainable)  # every trainable parameter exactly once
    frozen = [n for n, p in ctx.prepared.model.named_parameters() if not p.requires_grad]
    assert any(n.startswith("vision_model.encoder.layers.0.") for n in frozen)


def test_group_matching_nothing_is_an_error(tmp_path):
    recipe = tiny_recipe(tmp_path / "run")
    model, processor, source = load_model(recipe)
    prepared = prepare_model(model, processor, source, recipe)
    with pytest.raises(FreezeTargetError, match="matches no parameter name"):
        build_param_groups(prepared.model, [ParamGroup("typo", match="^vison_model")], recipe.training)
