"""DETR object detection: the pretrained loader, a tiny random-init twin, and the meta-device architecture.

The real model is `DetrForObjectDetection` (`facebook/detr-resnet-50` at `revision="no_timm"`: its
backbone is the transformers ResNet, since timm is not installed) with the torchvision-free
`DetrImageProcessorPil`. The class head (`class_labels_classifier`, num_labels + 1 with the "no object"
class) and the box head (`bbox_predictor`) are re-initialised for the data's classes; LoRA recipes train
them fully (`modules_to_save`): a random head under LoRA alone stays near mAP 0 (mmdetection #10932).
transformers 5 names the attention projections `q_proj/k_proj/v_proj/o_proj` in the encoder's
self-attention and the decoder's self- and cross-attention. `query_position_embeddings` is read through its
`.weight`, so LoRA on it would do nothing: it carries a `lora_noop_reason` that target validation reports.

With the transformers ResNet the whole backbone comes out of construction frozen (DETR's own freeze rule
looks for `stage.1`, the ResNet names are `stages.1`); the detection task's `data.backbone` states what the
recipe wants, as explicit freeze rules the plan lists. The Hungarian matcher of the loss needs scipy.

transformers is imported inside the functions: recipes import `TinyDetrSpec` from here, and recipe loading
stays free of torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trainers.models.family import HFParts, hf_family, label_fields
from trainers.optim.layer_decay import LayerStack

if TYPE_CHECKING:
    from torch import nn

DETR_RESNET50 = "facebook/detr-resnet-50"
DETR_NO_TIMM = "no_timm"  # the checkpoint branch whose backbone is the transformers ResNet
KNOWN_IDS = (DETR_RESNET50,)
DETR_PROCESSOR_FILES = (("preprocessor_config.json",),)
HEADS = ("class_labels_classifier", "bbox_predictor")
QUERY_NOOP = (
    "DETR reads query_position_embeddings through its .weight and never calls the module, so its "
    "LoRA matrices would get no gradient and change no output."
)


def mark_lora_noops(model: nn.Module) -> nn.Module:
    """Tell LoRA target validation (`trainers.lora.targets`) which modules LoRA cannot change."""
    from trainers.lora.targets import LORA_NOOP_ATTRIBUTE

    setattr(model.model.query_position_embeddings, LORA_NOOP_ATTRIBUTE, QUERY_NOOP)
    return model


def reinit_heads(model: nn.Module) -> nn.Module:
    """Fresh class and box heads (the class head is new anyway when the class count differs)."""
    import torch

    with torch.no_grad():
        for name in HEADS:
            for module in getattr(model, name).modules():
                if isinstance(module, torch.nn.Linear):
                    torch.nn.init.normal_(module.weight, std=model.config.init_std)
                    torch.nn.init.zeros_(module.bias)
    return model


# --------------------------------------------------------------------------------------------- loading


def load_detr(model_id: str, options: Any = None, **labels: Any) -> tuple[nn.Module, Any]:
    """`DetrForObjectDetection` with heads for the data's classes, and its PIL image processor.

    Through the generic loader (`trainers.models.hub.load_pretrained`). `use_pretrained_backbone=False`:
    the checkpoint holds the backbone's weights, nothing else is downloaded.
    """
    model, processor = DETR_PARTS.load(model_id, options, **labels)
    return mark_lora_noops(reinit_heads(model)), processor


# ------------------------------------------------------------------------------------------ tiny model


@dataclass
class TinyDetrSpec:
    """Sizes of the tiny DETR: a 2-stage basic-block ResNet (stride 8) on 64 px images, a 2+2-layer
    transformer of width 64, 5 queries (the demo images hold 1-2 objects). Dropout 0: rank-invariant runs."""

    d_model: int = 64
    layers: int = 2
    heads: int = 2
    ffn_dim: int = 128
    num_queries: int = 5
    embedding_size: int = 16
    hidden_sizes: tuple[int, ...] = (16, 32)
    depths: tuple[int, ...] = (1, 1)
    image_size: int = 64
    dropout: float = 0.0
    init_std: float = 0.02


def tiny_detr_config(spec: TinyDetrSpec, **labels: Any):
    from transformers import DetrConfig, ResNetConfig

    backbone = ResNetConfig(
        embedding_size=spec.embedding_size,
        hidden_sizes=list(spec.hidden_sizes),
        depths=list(spec.depths),
        layer_type="basic",
        out_features=[f"stage{len(spec.depths)}"],
    )
    return DetrConfig(
        use_timm_backbone=False,
        backbone_config=backbone,
        use_pretrained_backbone=False,
        d_model=spec.d_model,
        encoder_layers=spec.layers,
        decoder_layers=spec.layers,
        encoder_attention_heads=spec.heads,
        decoder_attention_heads=spec.heads,
        encoder_ffn_dim=spec.ffn_dim,
        decoder_ffn_dim=spec.ffn_dim,
        num_queries=spec.num_queries,
        dropout=spec.dropout,
        attention_dropout=spec.dropout,
        activation_dropout=spec.dropout,
        init_std=spec.init_std,
        **label_fields(**labels),
    )


def build_tiny_processor(spec: TinyDetrSpec):
    from transformers import DetrImageProcessorPil

    return DetrImageProcessorPil(size={"shortest_edge": spec.image_size, "longest_edge": spec.image_size})


def _spread_queries(model: nn.Module) -> None:
    """N(0, 1) object queries, as the original DETR's nn.Embedding: transformers' init_std (0.02) makes the
    queries near-identical, and from scratch they then predict one box each for ~400 steps here."""
    import torch

    torch.nn.init.normal_(model.model.query_position_embeddings.weight, std=1.0)


def build_tiny_detr(spec: TinyDetrSpec | None = None, seed: int = 0, **labels: Any) -> tuple[nn.Module, Any]:
    """A random-init `DetrForObjectDetection` and its processor; same seed, same weights; global RNG untouched."""
    spec = spec or TinyDetrSpec()
    model = DETR_PARTS.build(tiny_detr_config(spec, **labels), seed, init=_spread_queries)
    return mark_lora_noops(model), build_tiny_processor(spec)


# --------------------------------------------------------------------------------- meta-device counting


def detr_resnet50_config(**labels: Any):
    """`facebook/detr-resnet-50`'s architecture (no_timm branch): ResNet-50 backbone (its last stage),
    d_model 256, 6+6 layers, 8 heads, FFN 2048, 100 queries."""
    from transformers import DetrConfig, ResNetConfig

    return DetrConfig(
        use_timm_backbone=False,
        backbone_config=ResNetConfig(out_features=["stage4"]),
        use_pretrained_backbone=False,
        **labels,
    )


DETR_PARTS = HFParts(
    model_class="DetrForObjectDetection",
    processor_class="DetrImageProcessorPil",
    processor_files=DETR_PROCESSOR_FILES,
    known_configs={DETR_RESNET50: detr_resnet50_config},
    load_kwargs={"ignore_mismatched_sizes": True, "use_pretrained_backbone": False},
    local_config_kwargs={"revision": DETR_NO_TIMM, "use_pretrained_backbone": False},
)


def detr_meta_model(model_id: str, **labels: Any) -> nn.Module | None:
    """`DetrForObjectDetection` of `model_id` on the meta device: its local config if any, else the
    architecture of the known id; None for an unknown id without a local config."""
    model = DETR_PARTS.meta_model(model_id, **labels)
    return None if model is None else mark_lora_noops(model)


DETR_DETECTION = hf_family(
    "detr",
    DETR_PARTS,
    tasks=("detection",),
    tiny=build_tiny_detr,
    # backbone, input projection and the encoder-decoder transformer; the two prediction heads
    towers={"vision": ("model.",), "head": ("class_labels_classifier.", "bbox_predictor.")},
    # layer-wise LR decay along the whole chain: ResNet stem, each residual block, the projection into the
    # transformer (with the object queries), the encoder layers, the decoder layers
    layers=(
        LayerStack(
            "detr",
            layers=(
                "model.backbone.model.embedder.",
                "model.backbone.model.encoder.stages.{}.layers.{}.",
                ("model.input_projection.", "model.query_position_embeddings."),
                "model.encoder.layers.{}.",
                "model.decoder.layers.{}.",
            ),
            top=("model.decoder.layernorm.",),
        ),
    ),
    loader=load_detr,
    architecture=detr_meta_model,
    tiny_task_kwargs={"num_labels": 3},
)
