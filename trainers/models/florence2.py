"""Florence-2 (native `Florence2ForConditionalGeneration`): the pretrained loader, a tiny offline twin, and the
meta-device architecture of `florence-community/Florence-2-base` / `-large`.

The model is a DaViT vision tower (`model.vision_tower`), a projector into the language width
(`model.multi_modal_projector`) and a BART encoder-decoder (`model.language_model`) whose LM head `lm_head`
is tied to the shared embedding `model.language_model.shared` (39.4M parameters in the base model). The
processor (`Florence2Processor`: a CLIP PIL image processor and a BART tokenizer with `<loc_0>..<loc_999>`,
the task tags and `<image>`) turns a task token (`<OD>`) into its natural-language prompt and parses
generations with `post_process_generation`.

The legacy `microsoft/Florence-2-*` checkpoints ship remote code that breaks on transformers 5: the loader
refuses them and names the native id. fp16 is refused too (NaN in Florence-2's backward pass); on GPU the
run trains in bf16 (`training.precision=auto`).

The tiny model keeps the module names and the tokenizer layout and shrinks the widths: a 2-stage DaViT on
48 px images (36 + 1 image tokens; the demos use 64 px, 64 + 1), a 1+2 layer BART of width 64. The demos load
a DaViT pre-trained here on generated fabric images (`scripts/pretrain_florence_tiny_tower.py`: from random init
the tiny language side never learns to read the image). Its tokenizer is a byte-level BPE (BART's
kind) trained offline with `tokenizers` on the task prompts and the fabric-defect words, plus the Florence
special tokens; transformers is imported inside the functions, so recipes load without torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainers.errors import RecipeError
from trainers.models.family import HFParts, hf_family, no_task_fields
from trainers.optim.layer_decay import LayerStack
from trainers.paths import PROJECT_ROOT

if TYPE_CHECKING:
    from torch import nn

FLORENCE2_BASE = "florence-community/Florence-2-base"
FLORENCE2_LARGE = "florence-community/Florence-2-large"
KNOWN_IDS = (FLORENCE2_BASE, FLORENCE2_LARGE)
LEGACY_PREFIX = "microsoft/florence-2"
FLORENCE2_PROCESSOR_FILES = (
    ("preprocessor_config.json", "processor_config.json"),
    ("tokenizer.json", "vocab.json"),
)

IMAGE_TOKEN = "<image>"
# The demos' pre-trained tiny DaViT (`python scripts/pretrain_florence_tiny_tower.py` writes it).
TINY_TOWER_FILE = "data/fabric/tiny_vision_tower.safetensors"
# The Florence special tokens after BART's five (the original processor's list, in its order).
TASK_TAGS = ("<od>", "</od>", "<ocr>", "</ocr>")
OTHER_TAGS = (
    "<cap>",
    "</cap>",
    "<ncap>",
    "</ncap>",
    "<dcap>",
    "</dcap>",
    "<grounding>",
    "</grounding>",
    "<seg>",
    "</seg>",
    "<sep>",
    "<region_cap>",
    "</region_cap>",
    "<region_to_desciption>",
    "</region_to_desciption>",
    "<proposal>",
    "</proposal>",
    "<poly>",
    "</poly>",
    "<and>",
)
LOC_TOKENS = tuple(f"<loc_{i}>" for i in range(1000))
# Every parse type the tasks here use must be listed, else post_process_generation raises "Unsupported parse task".
POST_PROCESSOR_CONFIG: dict[str, Any] = {
    "description_with_bboxes": {},
    "phrase_grounding": {"banned_grounding_tokens": []},
    "pure_text": {},
    "bboxes": {},
    "description_with_bboxes_or_polygons": {},
    "polygons": {},
    "ocr": {},
}


def check_model_id(model_id: str) -> None:
    """The legacy remote-code ids fail on transformers 5: say so and name the native one."""
    if model_id.lower().startswith(LEGACY_PREFIX):
        size = "large" if "large" in model_id.lower() else "base"
        raise RecipeError(
            f"model.id {model_id!r} is the legacy remote-code Florence-2 checkpoint, which does not load with "
            f"transformers 5 (its own modelling code targets 4.x). Use the native checkpoint "
            f"'florence-community/Florence-2-{size}' (Florence2ForConditionalGeneration, no remote code)."
        )


def check_dtype(dtype: Any) -> None:
    if str(dtype).removeprefix("torch.") == "float16":
        raise RecipeError(
            "model.dtype=float16: Florence-2's backward pass gives NaN losses in fp16. Use model.dtype=bfloat16 "
            "(or float32; on GPU training.precision=auto already trains in bf16)."
        )


# OmniParser's keyword freeze (seed 000): what trains, by module path. `lm_head` is the shared embedding (tied).
OMNIPARSER_TRAINED = ("lm_head", "model.language_model.decoder.layers[-2:]", "model.multi_modal_projector")


def omniparser_freeze_rules():
    """Everything frozen, then the LM head (= the tied shared embedding), the last two decoder layers and the
    vision-to-language projector unfrozen."""
    from trainers.recipe import Freeze, Unfreeze

    return [Freeze("*"), *(Unfreeze(path) for path in OMNIPARSER_TRAINED)]


# --------------------------------------------------------------------------------------------- loading


def load_florence2(model_id: str, options: Any = None) -> tuple[nn.Module, Any]:
    """The native Florence-2 and its processor through the generic loader (`trainers.models.hub`)."""
    check_model_id(model_id)
    check_dtype(getattr(options, "dtype", None))
    return FLORENCE2_PARTS.load(model_id, options)


# ------------------------------------------------------------------------------------------ tiny model

# The words the tiny BPE is trained on: the processor's prompts and the demo's classes and descriptions.
CORPUS = (
    "Locate the objects with category name in the image.",
    "Locate the objects in the image, with their descriptions.",
    "Locate the phrases in the caption:",
    "What does the image describe? Describe in detail what is shown in the image.",
    "wrinkle drop broken horizontal wrinkle vertical wrinkle dark drop light drop broken thread",
    "wrinkle, drop and broken. broken and wrinkle, drop and drop, thread fabric cloth stain hole defect",
)


@dataclass
class TinyFlorence2Spec:
    """Sizes of the tiny Florence-2. Dropouts and drop-path 0: rank-invariant runs."""

    image_size: int = 48
    vision_dims: tuple[int, ...] = (32, 64)
    vision_heads: tuple[int, ...] = (2, 4)
    vision_depths: tuple[int, ...] = (1, 1)
    window_size: int = 4
    d_model: int = 64
    encoder_layers: int = 1
    decoder_layers: int = 2
    heads: int = 2
    ffn_dim: int = 128
    max_position_embeddings: int = 256
    bpe_vocab_size: int = 400
    dropout: float = 0.0
    # The pre-trained DaViT (scripts/pretrain_florence_tiny_tower.py); None: random init like the rest.
    vision_weights: str | None = None

    @property
    def image_tokens(self) -> int:
        """Patches after the stem's stride 4 and stride 2 in each later stage, plus the one temporal token."""
        return (self.image_size // (4 * 2 ** (len(self.vision_dims) - 1))) ** 2 + 1


def build_tiny_tokenizer(vocab_size: int = 400, max_length: int = 256):
    """A byte-level BPE tokenizer (BART's kind: spaces live in the tokens, so `convert_tokens_to_string` of one
    token keeps them and the post-processor's phrases come out right) + BART's specials, the Florence tokens
    and `<image>`. Deterministic: the same corpus gives the same merges."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import BartTokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        list(CORPUS) * 4,
        vocab_size=vocab_size,
        min_frequency=1,
        show_progress=False,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
    )
    tokenizer = BartTokenizer(
        tokenizer_object=bpe._tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
        model_max_length=max_length,
        extra_special_tokens={"image_token": IMAGE_TOKEN},
    )
    tokenizer.add_tokens([*TASK_TAGS, *LOC_TOKENS, *OTHER_TAGS], special_tokens=True)
    ids = {
        "pad": (tokenizer.pad_token_id, 1),
        "bos": (tokenizer.bos_token_id, 0),
        "eos": (tokenizer.eos_token_id, 2),
    }
    wrong = {k: got for k, (got, want) in ids.items() if got != want}
    if wrong or tokenizer.convert_tokens_to_ids("<loc_999>") == tokenizer.unk_token_id:
        raise RuntimeError(f"tiny Florence-2 tokenizer built with unexpected ids {wrong}")
    return tokenizer


def build_tiny_processor(spec: TinyFlorence2Spec | None = None):
    from transformers import CLIPImageProcessorPil, Florence2Processor

    spec = spec or TinyFlorence2Spec()
    size = {"height": spec.image_size, "width": spec.image_size}
    image_processor = CLIPImageProcessorPil(
        size=size,
        crop_size=size,
        do_center_crop=False,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
        image_seq_length=spec.image_tokens,
    )
    tokenizer = build_tiny_tokenizer(spec.bpe_vocab_size, spec.max_position_embeddings)
    return Florence2Processor(
        image_processor=image_processor, tokenizer=tokenizer, post_processor_config=POST_PROCESSOR_CONFIG
    )


def tiny_florence2_config(spec: TinyFlorence2Spec, tokenizer: Any):
    from transformers import BartConfig, Florence2Config, Florence2VisionConfig

    stages = len(spec.vision_dims)
    vision = Florence2VisionConfig(
        depths=spec.vision_depths,
        patch_size=(7, 3, 3, 3)[:stages],
        patch_stride=(4, 2, 2, 2)[:stages],
        patch_padding=(3, 1, 1, 1)[:stages],
        patch_prenorm=(False, True, True, True)[:stages],
        embed_dim=spec.vision_dims,
        num_heads=spec.vision_heads,
        num_groups=spec.vision_heads,
        window_size=spec.window_size,
        drop_path_rate=0.0,
        projection_dim=spec.d_model,
        max_position_embeddings=max(16, spec.image_size // 8),
    )
    eos = tokenizer.eos_token_id
    text = BartConfig(
        vocab_size=len(tokenizer),
        d_model=spec.d_model,
        encoder_layers=spec.encoder_layers,
        decoder_layers=spec.decoder_layers,
        encoder_attention_heads=spec.heads,
        decoder_attention_heads=spec.heads,
        encoder_ffn_dim=spec.ffn_dim,
        decoder_ffn_dim=spec.ffn_dim,
        max_position_embeddings=spec.max_position_embeddings,
        dropout=spec.dropout,
        attention_dropout=spec.dropout,
        activation_dropout=spec.dropout,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=eos,
        decoder_start_token_id=eos,
        forced_eos_token_id=eos,
    )
    return Florence2Config(
        vision_config=vision.to_dict(), text_config=text.to_dict(), image_token_id=tokenizer.image_token_id
    )


def build_tiny_florence2(spec: TinyFlorence2Spec | None = None, seed: int = 0) -> tuple[nn.Module, Any]:
    """A random-init Florence-2 and its offline processor; same seed, same weights; global RNG untouched."""
    spec = spec or TinyFlorence2Spec()
    processor = build_tiny_processor(spec)
    model = FLORENCE2_PARTS.build(tiny_florence2_config(spec, processor.tokenizer), seed)
    if spec.vision_weights is not None:
        load_tiny_tower(model, spec.vision_weights)
    return model, processor


# ------------------------------------------------------------------------------------ pre-trained tower

PRETRAIN_TOWER_COMMAND = "python scripts/pretrain_florence_tiny_tower.py"


def tower_path(path: str | Path) -> Path:
    """A relative path is the project's own file (recipes run from any directory)."""
    path = Path(path)
    return path if path.is_absolute() else PROJECT_ROOT / path


def load_tiny_tower(model: nn.Module, path: str) -> None:
    """The shipped pre-trained DaViT into the tiny model's vision tower (every tensor, shapes checked)."""
    from safetensors.torch import load_file

    file = tower_path(path)
    if not file.is_file():
        raise RecipeError(
            f"model.demo.vision_weights: {file} not found. Regenerate it with "
            f"`{PRETRAIN_TOWER_COMMAND}`, or set vision_weights=None for a random-init tower."
        )
    try:
        model.model.vision_tower.load_state_dict(load_file(str(file)), strict=True)
    except RuntimeError as error:
        raise RecipeError(
            f"model.demo.vision_weights: {file} does not fit this tiny vision tower ({error}). It was trained "
            "for TinyFlorence2Spec's default vision sizes; regenerate it after changing them."
        ) from error


# --------------------------------------------------------------------------------- meta-device counting

# The released architectures (DaViT + BART-base / BART-large; the original configs' vocabulary of 51289).
_ARCHITECTURES: dict[str, dict[str, Any]] = {
    FLORENCE2_BASE: {
        "embed_dim": (128, 256, 512, 1024),
        "heads": (4, 8, 16, 32),
        "projection_dim": 768,
        "d_model": 768,
        "layers": 6,
        "text_heads": 12,
        "ffn": 3072,
    },
    FLORENCE2_LARGE: {
        "embed_dim": (256, 512, 1024, 2048),
        "heads": (8, 16, 32, 64),
        "projection_dim": 1024,
        "d_model": 1024,
        "layers": 12,
        "text_heads": 16,
        "ffn": 4096,
    },
}
FLORENCE2_VOCAB = 51289


def known_config(model_id: str):
    from transformers import BartConfig, Florence2Config, Florence2VisionConfig

    a = _ARCHITECTURES[model_id]
    vision = Florence2VisionConfig(
        depths=(1, 1, 9, 1),
        embed_dim=a["embed_dim"],
        num_heads=a["heads"],
        num_groups=a["heads"],
        projection_dim=a["projection_dim"],
    )
    text = BartConfig(
        vocab_size=FLORENCE2_VOCAB,
        d_model=a["d_model"],
        encoder_layers=a["layers"],
        decoder_layers=a["layers"],
        encoder_attention_heads=a["text_heads"],
        decoder_attention_heads=a["text_heads"],
        encoder_ffn_dim=a["ffn"],
        decoder_ffn_dim=a["ffn"],
        max_position_embeddings=1024,
    )
    return Florence2Config(vision_config=vision.to_dict(), text_config=text.to_dict())


FLORENCE2_PARTS = HFParts(
    model_class="Florence2ForConditionalGeneration",
    processor_class="Florence2Processor",
    processor_files=FLORENCE2_PROCESSOR_FILES,
    known_configs={model_id: partial(known_config, model_id) for model_id in KNOWN_IDS},
    task_fields=no_task_fields,
    check_id=check_model_id,
)
# `Florence2ForConditionalGeneration` of an id on the meta device: its local config if any, else the known base /
# large architecture; None for an unknown id.
florence2_meta_model = FLORENCE2_PARTS.meta_model

FLORENCE2 = hf_family(
    "florence2",
    FLORENCE2_PARTS,
    tasks=("prompted-generation",),
    tiny=build_tiny_florence2,
    loader=load_florence2,
    # lm_head.weight is the shared embedding: deduplicated named_parameters list it under model.language_model
    towers={
        "vision": ("model.vision_tower.", "model.multi_modal_projector."),
        "text": ("model.language_model.",),
        "head": ("lm_head.",),
    },
    # layer-wise LR decay. Vision: each DaViT block, a stage's downsampling conv before its blocks; the projector
    # at the full rate. Text: the BART encoder then the decoder; `shared` (also the tied lm_head) is layer 0.
    layers=(
        LayerStack(
            "vision",
            layers=(("model.vision_tower.convs.{}.", "model.vision_tower.blocks.{}.{}."),),
            top=("model.multi_modal_projector.",),
        ),
        LayerStack(
            "text",
            layers=(
                (
                    "model.language_model.shared.",
                    "model.language_model.encoder.embed_positions.",
                    "model.language_model.encoder.layernorm_embedding.",
                ),
                "model.language_model.encoder.layers.{}.",
                "model.language_model.encoder.layer_norm.",
                (
                    "model.language_model.decoder.embed_positions.",
                    "model.language_model.decoder.layernorm_embedding.",
                ),
                "model.language_model.decoder.layers.{}.",
            ),
            top=("model.language_model.decoder.layer_norm.",),
        ),
    ),
)
