"""ViT image classification: the pretrained loader, a tiny random-init twin, and the meta-device architecture.

The real model is `ViTForImageClassification` (`google/vit-base-patch16-224-in21k`: 85.8M backbone
parameters, no classifier in the checkpoint: a new head of `num_labels` is initialised) with the
torchvision-free `ViTImageProcessorPil`. The label names come from the data (`id2label`), so the loader and
the tiny builder take the task's `num_labels` / `id2label` / `label2id`. transformers 5 names the attention
projections `q_proj/k_proj/v_proj/o_proj`: LoRA targets are `q_proj`, `v_proj`.

transformers is imported inside the functions: recipes import `TinyVitSpec` from here, and recipe loading
stays free of torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trainers.models.family import HFParts, hf_family, label_fields
from trainers.optim.layer_decay import LayerStack

if TYPE_CHECKING:
    from torch import nn

VIT_BASE_IN21K = "google/vit-base-patch16-224-in21k"
# ViTConfig() defaults are ViT-B/16 at 224 px: the architecture of these ids (the head is the task's).
KNOWN_IDS = (VIT_BASE_IN21K, "google/vit-base-patch16-224")
VIT_PROCESSOR_FILES = (("preprocessor_config.json",),)


def vit_b16_config(**labels: Any):
    from transformers import ViTConfig

    return ViTConfig(**labels)


# A head of another size in the checkpoint (a 1000-class ImageNet model) is replaced, not an error
# (`ignore_mismatched_sizes`); the in21k checkpoint has no head at all.
VIT_PARTS = HFParts(
    model_class="ViTForImageClassification",
    processor_class="ViTImageProcessorPil",
    processor_files=VIT_PROCESSOR_FILES,
    known_configs=dict.fromkeys(KNOWN_IDS, vit_b16_config),
    load_kwargs={"ignore_mismatched_sizes": True},
)
load_vit_classification = VIT_PARTS.load
vit_meta_model = VIT_PARTS.meta_model


# ------------------------------------------------------------------------------------------ tiny model


@dataclass
class TinyVitSpec:
    """Sizes of the tiny ViT: 32 px images in 8 px patches (16 tokens + CLS). Dropout 0: rank-invariant runs."""

    hidden_size: int = 64
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 128
    image_size: int = 32
    patch_size: int = 8
    dropout: float = 0.0
    initializer_range: float = 0.02


def tiny_vit_config(spec: TinyVitSpec, **labels: Any):
    from transformers import ViTConfig

    return ViTConfig(
        hidden_size=spec.hidden_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        intermediate_size=spec.intermediate_size,
        image_size=spec.image_size,
        patch_size=spec.patch_size,
        hidden_dropout_prob=spec.dropout,
        attention_probs_dropout_prob=spec.dropout,
        initializer_range=spec.initializer_range,
        **label_fields(**labels),
    )


def build_tiny_processor(spec: TinyVitSpec):
    from transformers import ViTImageProcessorPil

    return ViTImageProcessorPil(
        size={"height": spec.image_size, "width": spec.image_size}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )


def build_tiny_vit(spec: TinyVitSpec | None = None, seed: int = 0, **labels: Any) -> tuple[nn.Module, Any]:
    """A random-init `ViTForImageClassification` and its processor; same seed, same weights; global RNG untouched.

    `labels`: the task's num_labels / id2label / label2id."""
    spec = spec or TinyVitSpec()
    return VIT_PARTS.build(tiny_vit_config(spec, **labels), seed), build_tiny_processor(spec)


VIT_CLASSIFICATION = hf_family(
    "vit",
    VIT_PARTS,
    tasks=("classification",),
    tiny=build_tiny_vit,
    towers={"vision": ("vit.",), "head": ("classifier.",)},
    # layer-wise LR decay: embeddings, then each encoder block; the final norm trains at the head's rate
    layers=(
        LayerStack(
            "vision", layers=("vit.embeddings.", "vit.layers.{}."), top=("vit.layernorm.", "vit.pooler.")
        ),
    ),
    tiny_task_kwargs={"num_labels": 3},
)
