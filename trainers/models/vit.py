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

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trainers.models.family import FamilyEntry

if TYPE_CHECKING:
    from torch import nn

VIT_BASE_IN21K = "google/vit-base-patch16-224-in21k"
# ViTConfig() defaults are ViT-B/16 at 224 px: the architecture of these ids (the head is the task's).
KNOWN_IDS = (VIT_BASE_IN21K, "google/vit-base-patch16-224")
VIT_PROCESSOR_FILES = (("preprocessor_config.json",),)

VIT_CLASSIFICATION = FamilyEntry(
    name="vit-classification",
    model_class="transformers:ViTForImageClassification",
    processor_class="transformers:ViTImageProcessorPil",
    loader="trainers.models.vit:load_vit_classification",
    tiny="trainers.models.vit:build_tiny_vit",
    tasks=("classification",),
    towers={"vision": ("vit.",), "head": ("classifier.",)},
    architecture="trainers.models.vit:vit_meta_model",
    known_ids=KNOWN_IDS,
    processor_files=VIT_PROCESSOR_FILES,
)


def _labels(
    num_labels: int | None, id2label: Mapping[int, str] | None, label2id: Mapping[str, int] | None
) -> dict:
    """Consistent label fields for a config: names default to LABEL_i, the count to the names'."""
    if id2label is None:
        count = num_labels if num_labels is not None else 2
        id2label = {i: f"LABEL_{i}" for i in range(count)}
    id2label = {int(k): str(v) for k, v in id2label.items()}
    if num_labels is not None and num_labels != len(id2label):
        raise ValueError(f"num_labels={num_labels} but id2label has {len(id2label)} entries")
    label2id = dict(label2id) if label2id is not None else {v: k for k, v in id2label.items()}
    return {"num_labels": len(id2label), "id2label": id2label, "label2id": label2id}


# --------------------------------------------------------------------------------------------- loading


def load_vit_classification(
    model_id: str,
    options: Any = None,
    *,
    num_labels: int | None = None,
    id2label: Mapping[int, str] | None = None,
    label2id: Mapping[str, int] | None = None,
) -> tuple[nn.Module, Any]:
    """`ViTForImageClassification` with a `num_labels` head named by the data, and its PIL image processor.

    Through the generic loader (`trainers.models.hub.load_pretrained`: local dir / cache / Hub, offline
    errors, `LoadOptions`). A head of another size in the checkpoint (a 1000-class ImageNet model) is
    replaced, not an error (`ignore_mismatched_sizes`); the in21k checkpoint has no head at all.
    """
    from transformers import ViTForImageClassification, ViTImageProcessorPil

    from trainers.models.hub import load_pretrained

    head = {**_labels(num_labels, id2label, label2id), "ignore_mismatched_sizes": True}
    return load_pretrained(
        model_id,
        ViTForImageClassification,
        ViTImageProcessorPil,
        options,
        VIT_PROCESSOR_FILES,
        model_kwargs=head,
    )


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
        **_labels(labels.get("num_labels"), labels.get("id2label"), labels.get("label2id")),
    )


def build_tiny_processor(spec: TinyVitSpec):
    from transformers import ViTImageProcessorPil

    return ViTImageProcessorPil(
        size={"height": spec.image_size, "width": spec.image_size}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )


def build_tiny_vit(
    spec: TinyVitSpec | None = None,
    seed: int = 0,
    *,
    num_labels: int | None = None,
    id2label: Mapping[int, str] | None = None,
    label2id: Mapping[str, int] | None = None,
) -> tuple[nn.Module, Any]:
    """A random-init `ViTForImageClassification` and its processor; same seed, same weights; global RNG untouched."""
    import torch
    from transformers import ViTForImageClassification

    spec = spec or TinyVitSpec()
    config = tiny_vit_config(spec, num_labels=num_labels, id2label=id2label, label2id=label2id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ViTForImageClassification(config)
    return model, build_tiny_processor(spec)


# --------------------------------------------------------------------------------- meta-device counting


def vit_meta_model(
    model_id: str,
    *,
    num_labels: int | None = None,
    id2label: Mapping[int, str] | None = None,
    label2id: Mapping[str, int] | None = None,
) -> nn.Module | None:
    """`ViTForImageClassification` of `model_id` on the meta device: its local config if any, else the
    defaults for the known ViT-B/16 ids; None for an unknown id without a local config."""
    import torch
    from transformers import AutoConfig, ViTConfig, ViTForImageClassification

    labels = _labels(num_labels, id2label, label2id)
    try:
        config = AutoConfig.from_pretrained(model_id, local_files_only=True, **labels)
    except (OSError, ValueError):
        if model_id not in KNOWN_IDS:
            return None
        config = ViTConfig(**labels)
    with torch.device("meta"):
        return ViTForImageClassification(config)
