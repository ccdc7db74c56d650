"""The Florence-2 family: tiny offline model and processor, recipe counts (dry-run = peft = an independent
count), stock-peft reload, real-size counts on the meta device, and the family's refusals."""

from __future__ import annotations

import re

import pytest
import torch

from conftest import ROOT
from trainers.errors import FreezeTargetError, RecipeError
from trainers.models.florence2 import (
    FLORENCE2_BASE,
    FLORENCE2_LARGE,
    TinyFlorence2Spec,
    build_tiny_florence2,
    check_model_id,
    florence2_meta_model,
)
from trainers.plan import load_model, prepare_model
from trainers.recipe import Lora, load_recipe

LORA_RECIPE = str(ROOT / "recipes" / "florence2_lora.py")
FREEZE_RECIPE = str(ROOT / "recipes" / "florence2_omniparser_freeze.py")
HYBRID_RECIPE = str(ROOT / "recipes" / "florence2_omniparser_hybrid.py")


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_florence2(seed=0)


def test_tiny_processor_is_complete_offline(tiny):
    model, processor = tiny
    tokenizer = processor.tokenizer
    assert tokenizer.image_token == "<image>" and model.config.image_token_id == tokenizer.image_token_id
    assert len(tokenizer) == model.config.text_config.vocab_size
    assert tokenizer.convert_tokens_to_ids("<loc_999>") != tokenizer.unk_token_id
    assert tokenizer.convert_tokens_to_ids("<loc_1000>") == tokenizer.unk_token_id  # not in the vocabulary
    assert model.lm_head.weight is model.model.language_model.shared.weight  # tied, as the real model
    # the processor rewrites the task token into its prompt and prepends one image token per image feature
    from PIL import Image

    inputs = processor(text=["<OD>"], images=[Image.new("RGB", (64, 64))], return_tensors="pt")
    ids = inputs["input_ids"][0].tolist()
    assert ids.count(tokenizer.image_token_id) == processor.num_image_tokens == 37
    assert "Locate the objects with category name" in tokenizer.decode(ids, skip_special_tokens=True)
    # decoding keeps loc tokens and spaces inside labels, so the post-processor parses multi-word regions
    text = "</s>" + tokenizer.decode(tokenizer("dark drop<loc_1><loc_2><loc_30><loc_40>")["input_ids"])
    parsed = processor.post_process_generation(text, task="<DENSE_REGION_CAPTION>", image_size=(1000, 1000))
    assert parsed["<DENSE_REGION_CAPTION>"] == {"bboxes": [[1, 2, 30, 40]], "labels": ["dark drop"]}


def _independent_lora_count(model, pattern: str, r: int) -> int:
    """r * (in + out) per Linear whose full path matches (peft's regex rule), counted without peft."""
    return sum(
        r * (m.in_features + m.out_features)
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and re.fullmatch(pattern, name)
    )


def test_lora_recipe_counts_equal_peft_and_an_independent_count():
    recipe = load_recipe(
        LORA_RECIPE,
        [
            "lora.target_regex=" + load_recipe(LORA_RECIPE).lora.target_regex,
            "lora.r=8",
            "lora.modules_to_save=",
            "reporting.wandb=false",
        ],
        demo=True,
    )
    model, processor, source = load_model(recipe)
    expected = _independent_lora_count(model, recipe.lora.target_regex, 8)
    prepared = prepare_model(model, processor, source, recipe)
    trainable, _ = prepared.model.get_nb_trainable_parameters()
    assert prepared.lora.trainable == trainable == expected == prepared.count_trainable()
    towers = {
        p.split(".")[1] if p.startswith("model.") else p for t in prepared.lora.targets.values() for p in t
    }
    assert towers == {"vision_tower", "language_model", "lm_head"}  # both towers and the head
    assert [t.action for t in prepared.lora.tied] == ["untied"]  # lm_head got its own copy before wrapping
    assert prepared.core.lm_head.base_layer.weight is not prepared.core.model.language_model.shared.weight


def test_freeze_recipe_counts_the_tied_head_once_and_matches_an_independent_count():
    recipe = load_recipe(FREEZE_RECIPE, ["reporting.wandb=false"], demo=True)
    model, processor, source = load_model(recipe)
    lm = model.model.language_model
    expected = (
        lm.shared.weight.numel()
        + sum(p.numel() for p in lm.decoder.layers[-2:].parameters())
        + sum(p.numel() for p in model.model.multi_modal_projector.parameters())
    )
    prepared = prepare_model(model, processor, source, recipe)
    assert (
        prepared.freeze.trainable == expected == sum(p.numel() for p in model.parameters() if p.requires_grad)
    )
    assert lm.encoder.embed_tokens.weight.requires_grad  # the tie: the input embedding trains with the head


def test_hybrid_recipe_trains_the_frozen_keyword_modules_fully_with_lora_on_q_v():
    recipe = load_recipe(HYBRID_RECIPE, ["reporting.wandb=false"], demo=True)
    model, processor, source = load_model(recipe)
    prepared = prepare_model(model, processor, source, recipe)
    assert set(prepared.lora.modules_to_save) == {
        "lm_head",
        "model.language_model.decoder.layers.0",
        "model.language_model.decoder.layers.1",
        "model.multi_modal_projector",
    }
    assert prepared.lora.excluded  # q/v inside the fully trained decoder layers are left to them
    trainable, _ = prepared.model.get_nb_trainable_parameters()
    assert prepared.lora.trainable == trainable


def test_adapter_reloads_with_stock_peft_to_identical_generations(tmp_path):
    from peft import PeftModel

    from trainers.lora.export import save_adapter

    recipe = load_recipe(LORA_RECIPE, ["reporting.wandb=false"], demo=True)
    model, processor, source = load_model(recipe)
    prepared = prepare_model(model, processor, source, recipe)
    with torch.no_grad():  # a trained-looking adapter: LoRA B is zero at init
        for name, p in prepared.model.named_parameters():
            if "lora_B" in name or "modules_to_save" in name:
                p.add_(torch.randn_like(p) * 0.05)
    save_adapter(prepared.model, tmp_path / "best", processor, is_main=True)
    base, _ = build_tiny_florence2(recipe.model.demo, seed=recipe.training.seed)
    reloaded = PeftModel.from_pretrained(base, str(tmp_path / "best")).eval()
    from PIL import Image

    images = [Image.open(next((ROOT / "data/fabric/val/JPEGImages").glob("*.jpg"))).convert("RGB")] * 2
    inputs = processor(
        text=["<OD>", "<CAPTION_TO_PHRASE_GROUNDING>drop and wrinkle"],
        images=images,
        return_tensors="pt",
        padding=True,
    )
    kwargs = {"num_beams": 3, "max_new_tokens": 8, "do_sample": False}
    prepared.model.eval()
    with torch.no_grad():
        want = prepared.model.generate(**inputs, **kwargs)
        got = reloaded.generate(**inputs, **kwargs)
    assert torch.equal(want, got)


@pytest.mark.parametrize("model_id", [FLORENCE2_BASE, FLORENCE2_LARGE])
def test_real_size_counts_on_the_meta_device(model_id):
    from peft import LoraConfig, get_peft_model

    model = florence2_meta_model(model_id)
    total = sum(p.numel() for p in model.parameters())
    assert total == {FLORENCE2_BASE: 231_414_016, FLORENCE2_LARGE: 770_173_952}[model_id]
    pattern = load_recipe(LORA_RECIPE).lora.target_regex
    expected = _independent_lora_count(model, pattern, 8)
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=pattern))
    assert peft_model.get_nb_trainable_parameters()[0] == expected
    assert expected == {FLORENCE2_BASE: 2_779_848, FLORENCE2_LARGE: 6_079_176}[model_id]


def test_depthwise_conv_lora_target_says_which_convs_qualify(tiny):
    from trainers.lora import resolve_targets

    model, _ = tiny
    with pytest.raises(FreezeTargetError) as error:
        resolve_targets(model, Lora(target_modules=("conv1",), r=8))
    message = str(error.value)
    assert "groups=32" in message and "depthwise" in message and "divisible by its groups" in message
    assert "model.vision_tower.convs.0.conv" in message  # the patch embeddings qualify
    ok = resolve_targets(model, Lora(target_regex=r"model\.vision_tower\.convs\.\d+\.conv", r=8))
    assert ok.modules == ["model.vision_tower.convs.0.conv", "model.vision_tower.convs.1.conv"]


def test_legacy_remote_code_ids_and_fp16_are_refused():
    with pytest.raises(RecipeError, match="florence-community/Florence-2-large"):
        check_model_id("microsoft/Florence-2-large-ft")
    with pytest.raises(RecipeError, match="legacy remote-code"):
        florence2_meta_model("microsoft/Florence-2-base")
    from trainers.models.florence2 import check_dtype

    with pytest.raises(RecipeError, match="NaN"):
        check_dtype("float16")


@pytest.mark.parametrize("dims", [(32, 64), (16, 32, 64)])
def test_the_processor_gives_one_image_token_per_patch_for_any_number_of_vision_stages(dims):
    spec = TinyFlorence2Spec(
        image_size=64, vision_dims=dims, vision_heads=(2,) * len(dims), vision_depths=(1,) * len(dims)
    )
    model, processor = build_tiny_florence2(spec)
    from PIL import Image

    inputs = processor(text=["<OD>"], images=[Image.new("RGB", (64, 64))], return_tensors="pt")
    assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == spec.image_tokens
    with torch.no_grad():
        features = model.model.get_image_features(inputs["pixel_values"]).pooler_output
        model(**inputs, decoder_input_ids=torch.tensor([[model.config.text_config.decoder_start_token_id]]))
    assert features.shape[1] == spec.image_tokens == (64 // (4 * 2 ** (len(dims) - 1))) ** 2 + 1


def _probe_accuracy(tower: torch.nn.Module, processor, steps: int = 60) -> float:
    """A 1x1 conv probe trained on the frozen tower's features: foreground-cell accuracy on other images."""
    from scripts.pretrain_florence_tiny_tower import foreground_accuracy, generated_set

    pixels, maps = generated_set(processor, 96, seed=7)
    held_pixels, held_maps = generated_set(processor, 48, seed=8)
    tower.eval().requires_grad_(False)
    with torch.no_grad():
        features = tower(pixels).last_hidden_state
    torch.manual_seed(0)
    head = torch.nn.Conv2d(features.shape[1], 4, kernel_size=1)
    optimizer = torch.optim.AdamW(head.parameters(), lr=2e-2)
    for _ in range(steps):
        logits = torch.nn.functional.interpolate(head(features), size=maps.shape[1:], mode="bilinear")
        torch.nn.functional.cross_entropy(logits, maps).backward()
        optimizer.step()
        optimizer.zero_grad()
    return foreground_accuracy(tower, head, held_pixels, held_maps)


def test_the_demos_vision_tower_is_pretrained_to_see_the_marks():
    """The shipped tower: a linear probe on its frozen features classifies the marked cells of generated images
    it never saw; on the random-init tower's features the same probe does far worse."""
    recipe = load_recipe(LORA_RECIPE, ["reporting.wandb=false"], demo=True)
    assert recipe.model.demo.vision_weights is not None
    shipped, processor = build_tiny_florence2(recipe.model.demo)
    random_init, _ = build_tiny_florence2(TinyFlorence2Spec(image_size=64))
    pretrained = _probe_accuracy(shipped.model.vision_tower, processor)
    baseline = _probe_accuracy(random_init.model.vision_tower, processor)
    print(f"probe on marked cells: shipped tower {pretrained:.3f}, random-init tower {baseline:.3f}")
    assert pretrained > 0.9 and pretrained > baseline + 0.2


def test_tower_pretraining_writes_a_tower_that_loads(tmp_path):
    from scripts.pretrain_florence_tiny_tower import main

    out = tmp_path / "tower.safetensors"
    report = main(["--out", str(out), "--steps", "40"], out=lambda _: None)
    assert report["held_out_foreground_accuracy"] > report["held_out_foreground_accuracy_before"]
    model, _ = build_tiny_florence2(TinyFlorence2Spec(image_size=64, vision_weights=str(out)))
    from safetensors.torch import load_file

    saved = load_file(str(out))
    assert all(torch.equal(model.model.vision_tower.state_dict()[k], v) for k, v in saved.items())
    with pytest.raises(
        RecipeError, match="missing.safetensors.*python scripts/pretrain_florence_tiny_tower.py"
    ):
        build_tiny_florence2(TinyFlorence2Spec(vision_weights=str(tmp_path / "missing.safetensors")))
    with pytest.raises(RecipeError, match="does not fit this tiny vision tower"):
        build_tiny_florence2(TinyFlorence2Spec(vision_dims=(32, 48), vision_weights=str(out)))
