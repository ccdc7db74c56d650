"""ViTPose keypoints: the pretrained loader, a tiny random-init twin, and the meta-device architecture.

The real model is `VitPoseForPoseEstimation` (`usyd-community/vitpose-base-simple`: a ViT-B backbone on
256x192 crops, patch 16, and the simple decoder head: ReLU, 4x bilinear upsampling, one 3x3 conv to one
64x48 heatmap per keypoint) with the torchvision-free `VitPoseImageProcessorPil` (the default
`VitPoseImageProcessor` wants torchvision). The head (`head.conv`) has one output channel per keypoint: it
keeps its COCO weights for COCO's 17 keypoints and is re-initialised for any other skeleton. The backbone's
attention projections are `query`/`key`/`value` (ViT itself says `q_proj/k_proj/v_proj` in transformers 5).
`VitPoseForPoseEstimation` raises `NotImplementedError` when given labels: the pose task computes the loss.

transformers is imported inside the functions: recipes import `TinyVitPoseSpec` from here, and recipe
loading stays free of torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trainers.models.family import FamilyEntry
from trainers.models.vit import _labels

if TYPE_CHECKING:
    from torch import nn

VITPOSE_BASE = "usyd-community/vitpose-base-simple"
KNOWN_IDS = (VITPOSE_BASE,)
VITPOSE_PROCESSOR_FILES = (("preprocessor_config.json",),)

VITPOSE_POSE = FamilyEntry(
    name="vitpose-pose",
    model_class="transformers:VitPoseForPoseEstimation",
    processor_class="transformers:VitPoseImageProcessorPil",
    loader="trainers.models.vitpose:load_vitpose",
    tiny="trainers.models.vitpose:build_tiny_vitpose",
    tasks=("pose",),
    towers={"vision": ("backbone.",), "head": ("head.",)},
    architecture="trainers.models.vitpose:vitpose_meta_model",
    known_ids=KNOWN_IDS,
    processor_files=VITPOSE_PROCESSOR_FILES,
)


def load_vitpose(
    model_id: str,
    options: Any = None,
    *,
    num_labels: int | None = None,
    id2label: Mapping[int, str] | None = None,
    label2id: Mapping[str, int] | None = None,
) -> tuple[nn.Module, Any]:
    """`VitPoseForPoseEstimation` with one heatmap per keypoint of the data, and its PIL image processor
    (through the generic loader `trainers.models.hub.load_pretrained`)."""
    from transformers import VitPoseForPoseEstimation, VitPoseImageProcessorPil

    from trainers.models.hub import load_pretrained

    kwargs = {**_labels(num_labels, id2label, label2id), "ignore_mismatched_sizes": True}
    return load_pretrained(
        model_id,
        VitPoseForPoseEstimation,
        VitPoseImageProcessorPil,
        options,
        VITPOSE_PROCESSOR_FILES,
        model_kwargs=kwargs,
    )


# ------------------------------------------------------------------------------------------ tiny model


@dataclass
class TinyVitPoseSpec:
    """Sizes of the tiny ViTPose: 64x48 crops (height, width) in 8 px patches (8x6 tokens), 2 layers of width
    32, the simple decoder upsampling 4x to 32x24 heatmaps. Dropout 0: rank-invariant runs."""

    image_height: int = 64
    image_width: int = 48
    patch_size: int = 8
    hidden_size: int = 32
    layers: int = 2
    heads: int = 2
    mlp_ratio: int = 2
    scale_factor: int = 4
    initializer_range: float = 0.02


def tiny_vitpose_config(spec: TinyVitPoseSpec, **labels: Any):
    from transformers import VitPoseBackboneConfig, VitPoseConfig

    backbone = VitPoseBackboneConfig(
        image_size=(spec.image_height, spec.image_width),
        patch_size=(spec.patch_size, spec.patch_size),
        hidden_size=spec.hidden_size,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        mlp_ratio=spec.mlp_ratio,
        initializer_range=spec.initializer_range,
        out_indices=[spec.layers],
    )
    return VitPoseConfig(
        backbone_config=backbone,
        scale_factor=spec.scale_factor,
        initializer_range=spec.initializer_range,
        **_labels(labels.get("num_labels"), labels.get("id2label"), labels.get("label2id")),
    )


def build_tiny_processor(spec: TinyVitPoseSpec):
    from transformers import VitPoseImageProcessorPil

    return VitPoseImageProcessorPil(size={"height": spec.image_height, "width": spec.image_width})


def build_tiny_vitpose(
    spec: TinyVitPoseSpec | None = None,
    seed: int = 0,
    *,
    num_labels: int | None = None,
    id2label: Mapping[int, str] | None = None,
    label2id: Mapping[str, int] | None = None,
) -> tuple[nn.Module, Any]:
    """A random-init `VitPoseForPoseEstimation` and its processor; same seed, same weights; global RNG untouched."""
    import torch
    from transformers import VitPoseForPoseEstimation

    spec = spec or TinyVitPoseSpec()
    config = tiny_vitpose_config(spec, num_labels=num_labels, id2label=id2label, label2id=label2id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = VitPoseForPoseEstimation(config)
    return model, build_tiny_processor(spec)


# --------------------------------------------------------------------------------- meta-device counting


def vitpose_base_config(**labels: Any):
    """`usyd-community/vitpose-base-simple`'s architecture: ViT-B (768 wide, 12 layers, 12 heads, MLP 4x,
    qkv bias) on 256x192 crops in 16 px patches, output of the last layer, simple decoder (4x), 17 keypoints."""
    from transformers import VitPoseBackboneConfig, VitPoseConfig

    labels = {"num_labels": 17, **labels}
    return VitPoseConfig(backbone_config=VitPoseBackboneConfig(out_indices=[12]), **labels)


def vitpose_meta_model(
    model_id: str,
    *,
    num_labels: int | None = None,
    id2label: Mapping[int, str] | None = None,
    label2id: Mapping[str, int] | None = None,
) -> nn.Module | None:
    """`VitPoseForPoseEstimation` of `model_id` on the meta device: its local config if any, else the
    architecture of the known id; None for an unknown id without a local config."""
    import torch
    from transformers import AutoConfig, VitPoseForPoseEstimation

    labels = _labels(num_labels, id2label, label2id) if num_labels is not None or id2label is not None else {}
    try:
        config = AutoConfig.from_pretrained(model_id, local_files_only=True, **labels)
    except (OSError, ValueError):
        if model_id not in KNOWN_IDS:
            return None
        config = vitpose_base_config(**labels)
    with torch.device("meta"):
        return VitPoseForPoseEstimation(config)
