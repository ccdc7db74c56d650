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

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trainers.models.family import HFParts, given_label_fields, hf_family, label_fields
from trainers.optim.layer_decay import LayerStack

if TYPE_CHECKING:
    from torch import nn

VITPOSE_BASE = "usyd-community/vitpose-base-simple"
KNOWN_IDS = (VITPOSE_BASE,)
VITPOSE_PROCESSOR_FILES = (("preprocessor_config.json",),)

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
        **label_fields(**labels),
    )


def build_tiny_processor(spec: TinyVitPoseSpec):
    from transformers import VitPoseImageProcessorPil

    return VitPoseImageProcessorPil(size={"height": spec.image_height, "width": spec.image_width})


def build_tiny_vitpose(
    spec: TinyVitPoseSpec | None = None, seed: int = 0, **labels: Any
) -> tuple[nn.Module, Any]:
    """A random-init `VitPoseForPoseEstimation` and its processor; same seed, same weights; global RNG untouched."""
    spec = spec or TinyVitPoseSpec()
    return VITPOSE_PARTS.build(tiny_vitpose_config(spec, **labels), seed), build_tiny_processor(spec)


# --------------------------------------------------------------------------------- meta-device counting


def vitpose_base_config(**labels: Any):
    """`usyd-community/vitpose-base-simple`'s architecture: ViT-B (768 wide, 12 layers, 12 heads, MLP 4x,
    qkv bias) on 256x192 crops in 16 px patches, output of the last layer, simple decoder (4x), 17 keypoints."""
    from transformers import VitPoseBackboneConfig, VitPoseConfig

    labels = {"num_labels": 17, **labels}
    return VitPoseConfig(backbone_config=VitPoseBackboneConfig(out_indices=[12]), **labels)


# One heatmap per keypoint of the data: the head keeps its COCO weights for 17 keypoints, else it is replaced.
# On the meta device without labels the checkpoint's own keypoints count.
VITPOSE_PARTS = HFParts(
    model_class="VitPoseForPoseEstimation",
    processor_class="VitPoseImageProcessorPil",
    processor_files=VITPOSE_PROCESSOR_FILES,
    known_configs={VITPOSE_BASE: vitpose_base_config},
    meta_fields=given_label_fields,
    load_kwargs={"ignore_mismatched_sizes": True},
)
load_vitpose = VITPOSE_PARTS.load
vitpose_meta_model = VITPOSE_PARTS.meta_model

VITPOSE_POSE = hf_family(
    "vitpose",
    VITPOSE_PARTS,
    tasks=("pose",),
    tiny=build_tiny_vitpose,
    towers={"vision": ("backbone.",), "head": ("head.",)},
    layers=(
        LayerStack(
            "vision",
            layers=("backbone.embeddings.", "backbone.encoder.layer.{}."),
            top=("backbone.layernorm.",),
        ),
    ),
    tiny_task_kwargs={"num_labels": 11},
)
