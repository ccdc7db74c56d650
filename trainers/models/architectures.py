"""Known hub architectures, so `--dry-run` can count a model's parameters without its weights.

The config of a hub id is tried first (HF cache or local dir); these transformers defaults are the
fallback for the ids they are known to describe. The model is built on the meta device: no memory.
"""

from __future__ import annotations

import torch
from torch import nn

# BlipConfig() defaults are the base captioning architecture (ViT-B/16 at 384 px, BERT-base decoder).
_BLIP_DEFAULT_CONFIG_IDS = {"Salesforce/blip-image-captioning-base"}


def blip_meta_model(model_id: str) -> nn.Module | None:
    from transformers import AutoConfig, BlipConfig, BlipForConditionalGeneration

    try:
        config = AutoConfig.from_pretrained(model_id, local_files_only=True)
    except (OSError, ValueError):
        if model_id not in _BLIP_DEFAULT_CONFIG_IDS:
            return None
        config = BlipConfig()
    with torch.device("meta"):
        return BlipForConditionalGeneration(config)
