"""LoRA in the recipe core: target validation, counts equal to peft's, tied weights, param groups, and a
saved adapter that reloads with stock peft to the same outputs (and a merged model that matches it)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from conftest import ROOT, tiny_recipe
from trainers.errors import FreezeTargetError, RecipeError
from trainers.models.blip import TinyBlipSpec, build_tiny_blip
from trainers.plan import build_run_plan, load_model, prepare_model
from trainers.recipe import Lora, ParamGroup, Stage, Unfreeze
from trainers.run import complete_run, setup_run


def prepared(tmp_path, lora: Lora, freeze=(), stages=(), groups=()):
    recipe = tiny_recipe(tmp_path / "run")
    recipe.lora = lora
    recipe.freeze = list(freeze)
    recipe.stages = list(stages)
    recipe.param_groups = list(groups)
    recipe.validate()
    model, processor, source = load_model(recipe)
    return recipe, prepare_model(model, processor, source, recipe)


def peft_reference(target_modules, modules_to_save=None, **kw) -> tuple[int, int]:
    """peft's own count on a fresh tiny BLIP wrapped directly with get_peft_model."""
    from peft import LoraConfig, get_peft_model

    model, _ = build_tiny_blip(TinyBlipSpec(), seed=0)
    config = LoraConfig(target_modules=target_modules, modules_to_save=modules_to_save, **kw)
    return get_peft_model(model, config).get_nb_trainable_parameters()


SETTINGS = {
    "query,value": (
        Lora(target_modules=("query", "value"), r=4),
        (),
        dict(target_modules=["query", "value"], r=4),
    ),
    "+modules_to_save head": (
        Lora(target_modules=("query", "value"), r=4, modules_to_save=("text_decoder.cls",)),
        (),
        dict(target_modules=["query", "value"], r=4, modules_to_save=["text_decoder.cls"]),
    ),
    "regex vision qkv + Unfreeze rule": (
        Lora(target_regex=r"vision_model\.encoder\.layers\.\d+\.self_attn\.qkv", r=2),
        (Unfreeze("text_decoder.bert.encoder.layer[-1:]"),),
        dict(
            target_modules=r"vision_model\.encoder\.layers\.\d+\.self_attn\.qkv",
            r=2,
            modules_to_save=["text_decoder.bert.encoder.layer.1"],
        ),
    ),
    "dora + lora_only bias, both towers": (
        Lora(target_modules=("qkv", "query"), r=4, use_dora=True, bias="lora_only"),
        (),
        dict(target_modules=["qkv", "query"], r=4, use_dora=True, bias="lora_only"),
    ),
}


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_dry_run_trainable_counts_equal_peft(tmp_path, setting):
    lora, freeze, reference = SETTINGS[setting]
    recipe, prep = prepared(tmp_path, lora, freeze)
    trainable, total = peft_reference(**reference)
    assert prep.lora.trainable == trainable
    assert prep.lora.all_params == total
    assert prep.freeze.trainable + prep.freeze.scheduled == trainable  # the freeze map counts the same
    assert prep.freeze.total == total
    # every trainable parameter is in exactly one optimizer group, named as in the original model
    in_groups = sorted(n for g in prep.groups for n in g.param_names)
    assert in_groups == sorted(n for n, p in prep.core.named_parameters() if p.requires_grad)
    assert not any(n.startswith("base_model.") for n in in_groups)
    text = build_run_plan(recipe, prep).render()
    assert f"trainable (peft get_nb_trainable_parameters): {trainable:,}" in text


def test_plan_groups_targets_by_tower_and_warns_when_a_suffix_hits_both(tmp_path):
    recipe, prep = prepared(tmp_path, Lora(target_modules=("qkv", "query"), r=4))
    assert set(prep.lora.targets) == {"vision_model", "text_decoder"}
    assert len(prep.lora.targets["vision_model"]) == 12 and len(prep.lora.targets["text_decoder"]) == 4
    text = build_run_plan(recipe, prep).render()
    assert "vision_model.encoder.layers.{0-11}.self_attn.qkv  (x12)" in text
    assert "the targets hit 2 top-level modules" in text
    assert prep.lora.lora_params == 12 * 4 * (32 + 96) + 4 * 4 * (64 + 64)


def test_a_target_matching_nothing_lists_the_nearest_supported_names(tmp_path):
    with pytest.raises(FreezeTargetError) as info:
        prepared(tmp_path, Lora(target_modules=("query", "vaule")))
    message = str(info.value)
    assert "'vaule' matches no module" in message and "value (Linear)" in message
    with pytest.raises(FreezeTargetError, match="a BlipTextSelfAttention, which LoRA cannot wrap"):
        prepared(tmp_path, Lora(target_modules=("self",)))
    with pytest.raises(FreezeTargetError, match="modules_to_save entry 'text_decoder.clss'"):
        prepared(tmp_path, Lora(target_modules=("query",), modules_to_save=("text_decoder.clss",)))
    with pytest.raises(RecipeError, match="set one"):
        prepared(tmp_path, Lora(target_modules=("query",), target_regex=".*query"))


def test_bad_target_on_the_command_line_is_one_paragraph_without_traceback():
    result = subprocess.run(
        [
            sys.executable,
            "launch.py",
            "recipes/blip_lora.py",
            "--demo",
            "lora.target_modules=qury,value",
            "--dry-run",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert "'qury' matches no module" in result.stderr and "query (Linear)" in result.stderr


def test_targets_inside_a_fully_trained_module_are_left_to_it(tmp_path):
    recipe, prep = prepared(
        tmp_path,
        Lora(target_modules=("query", "dense"), r=4),
        freeze=[Unfreeze("text_decoder.bert.encoder.layer[-1:]")],
    )
    assert all(p.startswith("text_decoder.bert.encoder.layer.1.") for p in prep.lora.excluded)
    assert (
        len(prep.lora.excluded) == 6
    )  # query x2; dense: attention + crossattention output, intermediate, output
    assert (
        prep.lora.trainable
        == peft_reference(
            ["query", "dense"], ["text_decoder.bert.encoder.layer.1"], r=4, exclude_modules=prep.lora.excluded
        )[0]
    )
    assert (
        "not LoRA-wrapped: 6 matched modules inside modules_to_save" in build_run_plan(recipe, prep).render()
    )
    with pytest.raises(RecipeError, match="every LoRA target lies inside a module that is trained fully"):
        prepared(tmp_path, Lora(target_modules=("query",)), freeze=[Unfreeze("text_decoder.bert.encoder")])


def test_tied_head_is_untied_and_reported_or_refused(tmp_path):
    lora = Lora(target_modules=("query", "decoder"), r=4)
    recipe, prep = prepared(tmp_path, lora)
    core = prep.core
    head = core.text_decoder.cls.predictions.decoder
    assert head.base_layer.weight is not core.text_decoder.bert.embeddings.word_embeddings.weight
    assert core.config.text_config.tie_word_embeddings is False
    assert "text_decoder.cls.predictions.decoder.weight" in prep.lora.untied_names
    assert "untied: the LoRA base weight gets its own copy" in build_run_plan(recipe, prep).render()
    with pytest.raises(RecipeError, match="lora.tied_weights=untie"):
        prepared(tmp_path, Lora(target_modules=("query", "decoder"), tied_weights="refuse"))


def test_param_group_regexes_match_unprefixed_names_through_the_wrapper(tmp_path):
    recipe = tiny_recipe(tmp_path / "run", lr=1e-3)
    recipe.lora = Lora(target_modules=("query", "value"), r=4)
    recipe.freeze = [Unfreeze("vision_model.post_layernorm")]
    recipe.param_groups = [
        ParamGroup("lora", match=r"lora_", lr_mult=10.0),
        ParamGroup("vision", match=r"^vision_model\.", lr_mult=0.1),
    ]
    ctx = setup_run(recipe)
    optimizer = ctx.trainer.create_optimizer()
    by_name = {g["name"]: g for g in optimizer.param_groups}
    assert by_name["lora/decay"]["lr"] == pytest.approx(1e-2)
    assert by_name["vision/no_decay"]["lr"] == pytest.approx(1e-4)
    n_lora = sum(p.numel() for g in optimizer.param_groups if g["name"] == "lora/decay" for p in g["params"])
    assert n_lora == ctx.prepared.lora.lora_params


def caption_batch(processor, n=4):
    from PIL import Image

    images = [Image.open(ROOT / "data/shapes/images" / f"val_{i:05d}.png").convert("RGB") for i in range(n)]
    batch = processor(images=images, text=["a red circle"] * n, return_tensors="pt", padding=True)
    batch["input_ids"][:, 0] = processor.tokenizer.bos_token_id
    return batch


def logits_of(model, batch):
    model.eval()
    with torch.no_grad():
        return model(**batch).logits


@pytest.fixture(scope="module")
def trained_adapter(tmp_path_factory):
    """A short LoRA run: LoRA on the text attention and on the tied LM head, a fully trained block, merged out."""
    out = tmp_path_factory.mktemp("lora") / "run"
    recipe = tiny_recipe(out, epochs=1, lr=1e-2)
    recipe.lora = Lora(
        target_modules=("query", "value", "decoder"),
        r=4,
        modules_to_save=("vision_model.post_layernorm",),
        save_merged=True,
    )
    recipe.freeze = [Unfreeze("text_decoder.bert.encoder.layer[-1:].output")]
    ctx = setup_run(recipe)
    summary = complete_run(ctx)
    return recipe, ctx, summary, out


def test_saved_adapter_reloads_with_stock_peft_to_the_same_logits_and_captions(trained_adapter):
    from peft import PeftModel

    recipe, ctx, summary, out = trained_adapter
    best = out / "best"
    for name in (
        "adapter_model.safetensors",
        "adapter_config.json",
        "tokenizer.json",
        "processor_config.json",
    ):
        assert (best / name).is_file(), name
    assert not (best / "model.safetensors").exists()
    in_memory = ctx.prepared.model
    lora_b = [p for n, p in in_memory.named_parameters() if "lora_B" in n]
    assert any(p.abs().max() > 0 for p in lora_b), "LoRA did not train"

    base, processor = build_tiny_blip(TinyBlipSpec(), seed=recipe.training.seed)  # stock, tied base
    reloaded = PeftModel.from_pretrained(base, str(best))
    batch = caption_batch(processor)
    assert torch.equal(logits_of(in_memory, batch), logits_of(reloaded, batch))
    gen = dict(pixel_values=batch["pixel_values"], num_beams=2, max_length=12)
    with torch.no_grad():
        assert torch.equal(in_memory.generate(**gen), reloaded.generate(**gen))

    lora = summary["lora"]
    assert 0 < lora["adapter_bytes"] < lora["full_model_bytes"]
    assert lora["adapter_vs_full"] == pytest.approx(lora["adapter_bytes"] / lora["full_model_bytes"])
    assert "text_decoder.bert.encoder.layer.1.output" in lora["modules_to_save"]
    from safetensors.torch import load_file

    saved = load_file(str(best / "adapter_model.safetensors"))
    in_file = sum(v.numel() * v.element_size() for k, v in saved.items() if "lora_" in k)
    assert lora["lora_matrix_bytes"] == in_file > 0  # the adapter's own LoRA part, apart from saved modules


MERGE_TOLERANCE = 1e-5  # max abs logit difference, merged vs adapter model (measured 3.6e-7, float32)


def test_merged_model_matches_the_adapter_model_and_keeps_the_input_embedding(trained_adapter):
    from transformers import BlipForConditionalGeneration

    recipe, ctx, summary, out = trained_adapter
    merged = BlipForConditionalGeneration.from_pretrained(out / "merged")
    base, processor = build_tiny_blip(TinyBlipSpec(), seed=recipe.training.seed)
    batch = caption_batch(processor)
    diff = (logits_of(merged, batch) - logits_of(ctx.prepared.model, batch)).abs().max().item()
    print(f"merged vs adapter model: max |logit diff| {diff:.2e}")
    assert diff <= MERGE_TOLERANCE, diff
    # merging the LoRA on the (untied) LM head must not have touched the input embedding
    assert torch.equal(
        merged.text_decoder.bert.embeddings.word_embeddings.weight,
        base.text_decoder.bert.embeddings.word_embeddings.weight,
    )
    assert not torch.equal(
        merged.text_decoder.cls.predictions.decoder.weight, base.text_decoder.cls.predictions.decoder.weight
    )


def test_progressive_unfreezing_with_lora_gates_the_saved_copies(tmp_path):
    _, prep = prepared(
        tmp_path,
        Lora(target_modules=("query", "value"), r=4),
        freeze=[Unfreeze("vision_model.encoder.layers[-1:]")],
        stages=[Stage(epoch=1, unfreeze="vision_model.encoder.layers[-2:]")],
    )
    assert prep.lora.modules_to_save == ["vision_model.encoder.layers.10", "vision_model.encoder.layers.11"]
    assert all(".modules_to_save.default." in n for n in prep.stages[0].param_names)
    assert prep.stages[0].param_names[0].startswith("vision_model.encoder.layers.10.")
    params = dict(prep.core.named_parameters())
    assert all(params[n].requires_grad for n in prep.stages[0].param_names)  # trainable but gated
    assert prep.freeze.scheduled == sum(params[n].numel() for n in prep.stages[0].param_names)
    assert prep.lora.trainable == prep.freeze.trainable + prep.freeze.scheduled


def test_cli_overrides_reach_the_lora_plan():
    result = subprocess.run(
        [
            sys.executable,
            "launch.py",
            "recipes/blip_lora.py",
            "--demo",
            "lora.r=16",
            "lora.target_modules=query,value",
            "--dry-run",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "r=16 alpha=32" in result.stdout
    assert "query: 4 modules, value: 4 modules" in result.stdout
    assert "trainable (peft get_nb_trainable_parameters)" in result.stdout


def test_a_resumed_lora_run_ends_with_the_same_adapter_as_an_uninterrupted_one(tmp_path):
    from safetensors.torch import load_file

    def run(out, epochs):
        recipe = tiny_recipe(out, epochs=epochs, resume="auto", lr_scheduler="constant")
        recipe.lora = Lora(
            target_modules=("query", "value"),
            r=4,
            modules_to_save=("text_decoder.cls.predictions.transform",),
        )
        return complete_run(setup_run(recipe))

    run(tmp_path / "resumed", 1)
    assert run(tmp_path / "resumed", 2)["global_steps"] == 8
    run(tmp_path / "straight", 2)
    a = load_file(tmp_path / "resumed" / "best" / "adapter_model.safetensors")
    b = load_file(tmp_path / "straight" / "best" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]  # exact resume: bit for bit
    assert not different, different
