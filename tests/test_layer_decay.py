"""Layer-wise LR decay: each family's declared layout gives layer i of depth `lr * decay ** (depth - i)`, the
optimizer gets exactly those rates (with LoRA, with a stage's own `lr_mult`), and `--dry-run` shows the table."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from conftest import ROOT
from trainers.errors import RecipeError
from trainers.models import registry
from trainers.optim.layer_decay import LayerStack, layer_positions
from trainers.optim.param_groups import build_param_groups
from trainers.plan import build_run_plan
from trainers.recipe import Lora, ParamGroup, Stage, Training
from trainers.recipe.loading import load_recipe
from trainers.run import setup_run

LR, DECAY = 1e-3, 0.8

# The closed form for each family's tiny model, written out by hand: (name regex, layer index from the
# regex's integer groups, the stack's depth). A parameter no rule matches trains at the full rate (a head).
Rule = tuple[str, Callable[..., int], int]
CLOSED_FORM: dict[str, list[Rule]] = {
    "vit": [  # 4 blocks
        (r"^vit\.embeddings\.", lambda: 0, 5),
        (r"^vit\.layers\.(\d+)\.", lambda k: k + 1, 5),
        (r"^vit\.layernorm\.", lambda: 5, 5),
    ],
    "blip": [  # vision: 12 blocks; text: 2 blocks; the LM head is a head
        (r"^vision_model\.embeddings\.", lambda: 0, 13),
        (r"^vision_model\.encoder\.layers\.(\d+)\.", lambda k: k + 1, 13),
        (r"^vision_model\.post_layernorm\.", lambda: 13, 13),
        (r"^text_decoder\.bert\.embeddings\.", lambda: 0, 3),
        (r"^text_decoder\.bert\.encoder\.layer\.(\d+)\.", lambda k: k + 1, 3),
    ],
    "detr": [  # ResNet stem + 2 stages of 1 block, projection and queries, 2 encoder, 2 decoder layers
        (r"^model\.backbone\.model\.embedder\.", lambda: 0, 8),
        (r"^model\.backbone\.model\.encoder\.stages\.(\d+)\.layers\.(\d+)\.", lambda s, b: 1 + s + b, 8),
        (r"^model\.(?:input_projection|query_position_embeddings)\.", lambda: 3, 8),
        (r"^model\.encoder\.layers\.(\d+)\.", lambda k: 4 + k, 8),
        (r"^model\.decoder\.layers\.(\d+)\.", lambda k: 6 + k, 8),
        (r"^model\.decoder\.layernorm\.", lambda: 8, 8),
    ],
    "vitpose": [  # 2 blocks
        (r"^backbone\.embeddings\.", lambda: 0, 3),
        (r"^backbone\.encoder\.layer\.(\d+)\.", lambda k: k + 1, 3),
        (r"^backbone\.layernorm\.", lambda: 3, 3),
    ],
    "dual-encoder": [  # ViT: 2 blocks; MiniLM: 6 blocks; projections and logit scale are heads
        (r"^vision_model\.embeddings\.", lambda: 0, 3),
        (r"^vision_model\.layers\.(\d+)\.", lambda k: k + 1, 3),
        (r"^vision_model\.(?:layernorm|pooler)\.", lambda: 3, 3),
        (r"^text_model\.embeddings\.", lambda: 0, 7),
        (r"^text_model\.encoder\.layer\.(\d+)\.", lambda k: k + 1, 7),
    ],
    "florence2": [  # DaViT: 2 stages of 1 block, each after its conv; BART: 1 encoder, 2 decoder layers
        (r"^model\.vision_tower\.convs\.(\d+)\.", lambda s: 2 * s, 4),
        (r"^model\.vision_tower\.blocks\.(\d+)\.(\d+)\.", lambda s, b: 2 * s + 1 + b, 4),
        (r"^model\.multi_modal_projector\.", lambda: 4, 4),
        (
            r"^model\.language_model\.(?:shared|encoder\.embed_positions|encoder\.layernorm_embedding)\.",
            lambda: 0,
            5,
        ),
        (r"^model\.language_model\.encoder\.layers\.(\d+)\.", lambda k: 1 + k, 5),
        (r"^model\.language_model\.decoder\.(?:embed_positions|layernorm_embedding)\.", lambda: 2, 5),
        (r"^model\.language_model\.decoder\.layers\.(\d+)\.", lambda k: 3 + k, 5),
    ],
}


def closed_form_lr(
    rules: list[Rule], name: str, used: set[int], decay: float = DECAY, lr: float = LR
) -> float:
    for i, (pattern, index, depth) in enumerate(rules):
        match = re.match(pattern, name)
        if match:
            used.add(i)
            return lr * decay ** (depth - index(*(int(g) for g in match.groups())))
    return lr


def laid_out_families() -> list[str]:
    return sorted(f for f in registry.FAMILIES if registry.get_family(f).layers)


def test_every_family_that_declares_a_layout_has_a_closed_form():
    """A family without a layout refuses layer_decay (the catalogue's layer-decay-family-without-layout case)."""
    assert laid_out_families() == sorted(CLOSED_FORM)
    assert set(laid_out_families()) <= set(registry.FAMILIES)


@pytest.mark.parametrize("family", laid_out_families())
def test_layer_decay_lrs_equal_the_closed_form_table(family):
    entry = registry.get_family(family)
    model, _ = entry.build_tiny()(None, seed=0, **entry.tiny_task_kwargs)
    model.requires_grad_(True)  # every parameter (DETR's backbone comes out of construction frozen)
    plans = build_param_groups(
        model, [], Training(lr=LR, layer_decay=DECAY), layout=entry.layers, family=family
    )
    rules, used = CLOSED_FORM[family], set()
    planned = 0
    for plan in plans:
        for name in plan.param_names:
            assert plan.lr == pytest.approx(closed_form_lr(rules, name, used), rel=1e-12), (family, name)
            planned += 1
    assert planned == len(list(model.parameters()))
    assert used == set(range(len(rules))), "a closed-form rule matched no parameter"
    assert min(p.lr for p in plans) == pytest.approx(LR * DECAY ** max(d for _, _, d in rules))  # embeddings


def test_a_stack_entry_matching_nothing_takes_no_index_and_nested_indices_interleave():
    stack = LayerStack("v", layers=("emb.", "missing.", ("conv.{}.", "block.{}.{}.")), top=("norm.",))
    names = ["emb.w", "conv.0.w", "block.0.0.w", "block.0.1.w", "conv.1.w", "block.1.0.w", "norm.w", "head.w"]
    placed = {n: (p.index, p.depth) for n, p in layer_positions([stack], names).items()}
    assert placed == {
        "emb.w": (0, 6),
        "conv.0.w": (1, 6),
        "block.0.0.w": (2, 6),
        "block.0.1.w": (3, 6),
        "conv.1.w": (4, 6),
        "block.1.0.w": (5, 6),
        "norm.w": (6, 6),
    }


def test_a_family_without_a_layout_refuses_layer_decay():
    entry = registry.get_family("vit")
    model, _ = entry.build_tiny()(None, seed=0, **entry.tiny_task_kwargs)
    with pytest.raises(
        RecipeError, match=r"training\.layer_decay=0\.7: model family 'plain' declares no layer"
    ):
        build_param_groups(model, [], Training(layer_decay=0.7), layout=(), family="plain")
    groups = [ParamGroup("v", match="^vit", layer_decay=0.5)]
    with pytest.raises(RecipeError, match=r"param_groups\['v'\]\.layer_decay=0\.5"):
        build_param_groups(model, groups, Training(), layout=(), family="plain")


def test_optimizer_lrs_with_lora_and_a_stage_and_the_dry_run_table(tmp_path):
    """The ViT demo with LoRA adapters (their own group decaying by 0.5), the last block fully trained from
    stage 0 at lr_mult 0.5, the rest at training.layer_decay 0.8: each optimizer LR is the closed form."""
    recipe = load_recipe(
        ROOT / "recipes" / "vit_layer_decay.py",
        [f"output_dir={tmp_path / 'run'}", f"training.lr={LR}", f"training.layer_decay={DECAY}"],
        demo=True,
    )
    recipe.lora = Lora(target_modules=("q_proj", "v_proj"), r=4, modules_to_save=("classifier",))
    recipe.stages = [Stage(epoch=1, unfreeze="vit.layers[-1:]", lr_mult=0.5)]
    recipe.param_groups = [ParamGroup("lora", match=r"lora_", layer_decay=0.5)]
    ctx = setup_run(recipe)
    optimizer = ctx.trainer.create_optimizer()
    named = {id(p): n.removeprefix("base_model.model.") for n, p in ctx.trainer.model.named_parameters()}
    rules, used = CLOSED_FORM["vit"], set()
    seen = {"lora": 0, "stage": 0, "head": 0}
    for group in optimizer.param_groups:
        for param in group["params"]:
            name = named[id(param)]
            if "lora_" in name:
                want, kind = closed_form_lr(rules, name, used, decay=0.5), "lora"  # its base layer's rate
            elif name.startswith("vit.layers.3."):
                want, kind = 0.5 * closed_form_lr(rules, name, used), "stage"  # the stage's lr_mult on top
            else:
                assert name.startswith("classifier."), name
                want, kind = LR, "head"
            assert group["lr"] == pytest.approx(want, rel=1e-12), (name, group["name"])
            seen[kind] += 1
    assert all(seen.values()), seen
    lora_lrs = sorted({g["lr"] for g in optimizer.param_groups if g["name"].startswith("lora/")})
    # blocks 0-2 (layers 1-3) carry adapters; block 3 is the stage's, trained fully (peft modules_to_save)
    assert lora_lrs == pytest.approx([LR * 0.5**4, LR * 0.5**3, LR * 0.5**2])
    assert ctx.prepared.stages[0].group_indices  # the stage's groups are gated by layer too

    text = build_run_plan(recipe, ctx.prepared).render()
    table = text.split("layer-wise lr decay")[1].split("training:")[0]
    assert re.search(r"lora\s+vision 1/5 vit\.layers\.0\s+6\.25e-05", table), table
    assert re.search(r"default/stage0\s+vision 4/5 vit\.layers\.3\s+0\.0004\s", table), table
    assert re.search(r"default\s+heads / outside the towers' layers \(full rate\)\s+0\.001\s", table), table
