"""Qwen2.5-VL: the real 3B checkpoint's architecture on the meta device has its published parameter count, and the
Qwen2-VL LoRA recipe's targets (the language model's attention and MLP) give peft's own trainable count on it;
the tiny twin's windowed vision tower is a Qwen2.5-VL one (the family contract covers the rest)."""

from __future__ import annotations

import re

from trainers.models.registry import get_family
from trainers.models.vlm_chat import QWEN2_5_VL_3B

LORA_TARGETS = r"model\.language_model\.layers\.\d+\.(self_attn\.(q_proj|k_proj|v_proj|o_proj)|mlp\.(gate_proj|up_proj|down_proj))"


def test_the_real_3b_architecture_counts_its_published_size_and_peft_counts_the_lora():
    from peft import LoraConfig, get_peft_model

    model = get_family("qwen2.5-vl").meta_model(QWEN2_5_VL_3B)
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    assert sum(p.numel() for p in model.parameters()) == 3_754_622_976  # the checkpoint's 3.75B
    assert re.fullmatch(LORA_TARGETS, "model.language_model.layers.35.mlp.down_proj")
    peft_model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=LORA_TARGETS))
    trainable, total = peft_model.get_nb_trainable_parameters()
    assert (trainable, total) == (29_933_568, 3_754_622_976 + 29_933_568)  # 252 modules of r 16


def test_the_tiny_twin_has_windowed_vision_blocks_and_full_attention_in_the_last():
    model, processor = get_family("qwen2.5-vl").build_tiny()(None, seed=0)
    vision = model.config.vision_config
    assert vision.fullatt_block_indexes == [vision.depth - 1] and vision.window_size > 0
    assert type(processor).__name__ == "ImageOnlyQwen2_5_VLProcessor"
    assert not hasattr(processor, "video_processor") or processor.video_processor is None
