"""Chat vision-language models (`AutoModelForImageTextToText` style): Qwen2-VL, Qwen2.5-VL, SmolVLM (Idefics3) and
PaliGemma.

One module, one registry entry per model type: the types differ in their transformers classes, their module
names (so their towers) and their chat templates, not in how they load, build or train. Each entry names
the same four towers — `vision` (the image encoder), `projector` (the connector / merger that maps image
features into the language model's space), `language` (the decoder LM, its embeddings included) and `head`
(`lm_head`; PaliGemma ties it to the input embedding, so it counts under `language`) — for freeze rules,
parameter groups and the `--dry-run` tower table.

The tiny offline twins are random-init models from the transformers config classes with a byte-level BPE
trained offline with `tokenizers` on the demo's words, carrying the model type's own special tokens
(`<|im_start|>`, `<|image_pad|>`, `<end_of_utterance>`, `<image>`, ...) and its released chat template, so
the chat task renders a conversation exactly as for the real checkpoint.

Qwen2-VL's and SmolVLM2's processors also hold a video processor, which transformers builds only with
torchvision; the chat task uses images only, so Qwen2-VL loads through `ImageOnlyQwen2VLProcessor` (the same
processor without its video part) and SmolVLM through the Idefics3 classes its 256M / 500M / 2.2B checkpoints
are saved as. transformers is imported inside the functions: recipes load without torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from trainers.models.family import HFParts, hf_family, no_task_fields

QWEN2_VL_2B = "Qwen/Qwen2-VL-2B-Instruct"
QWEN2_5_VL_3B = "Qwen/Qwen2.5-VL-3B-Instruct"
SMOLVLM_256M = "HuggingFaceTB/SmolVLM-256M-Instruct"
PALIGEMMA_3B = "google/paligemma-3b-pt-224"

PROCESSOR_FILES = (
    ("preprocessor_config.json", "processor_config.json"),
    ("tokenizer.json", "tokenizer.model", "vocab.json"),
)

# --------------------------------------------------------------------------------------- chat templates

# Qwen2-VL-Instruct's released template (tokenizer_config.json / chat_template.json).
QWEN2_VL_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# SmolVLM-Instruct's released template (Idefics3 processor).
SMOLVLM_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n"
    "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

QWEN2_VL_SPECIALS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
SMOLVLM_SPECIALS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<end_of_utterance>",
    "<fake_token_around_image>",
    "<global-img>",
    "<image>",
    *(f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)),
)
PALIGEMMA_SPECIALS = ("<pad>", "<eos>", "<bos>", "<unk>", "<image>")

# The words the tiny BPE is trained on: the templates' text and the shipped chat demo's questions and answers.
CORPUS = (
    "system You are a helpful assistant. user assistant User Assistant answer en",
    "How many circles are there? How many circles are in the picture? Count the circles.",
    "What colour is the square? Which colour does the square have? Name the colour of the square.",
    "zero one two three four five six red green blue yellow purple orange none",
    "Is there a square? yes no Answer with one word. Describe the image. a picture of shapes",
)


@cache
def image_only_processor(base: str = "Qwen2VLProcessor") -> type:
    """Qwen-VL's processor (`base`: Qwen2VLProcessor or Qwen2_5_VLProcessor) without its video processor
    (transformers builds that only with torchvision)."""
    import transformers
    from transformers.processing_utils import ProcessorMixin

    class ImageOnlyProcessor(getattr(transformers, base)):
        """Qwen-VL's processor for images: the same prompts, image tokens and chat template, no video part."""

        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            self.image_token = getattr(tokenizer, "image_token", "<|image_pad|>")
            self.video_token = getattr(tokenizer, "video_token", "<|video_pad|>")
            self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
            self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    ImageOnlyProcessor.__name__ = ImageOnlyProcessor.__qualname__ = f"ImageOnly{base}"
    return ImageOnlyProcessor


def image_only_qwen2_vl_processor() -> type:
    return image_only_processor("Qwen2VLProcessor")


def image_only_qwen2_5_vl_processor() -> type:
    return image_only_processor("Qwen2_5_VLProcessor")


# ------------------------------------------------------------------------------------------ tiny twins


@dataclass
class TinyChatVlmSpec:
    """Sizes of a tiny chat VLM (any model type). Dropouts 0: rank-invariant runs.

    `image_size` is the square the demo's images are resized to: Qwen2-VL's processor gets it as both its
    min and max pixel count (so every image gives the same patch grid), Idefics3 / PaliGemma as their size.
    """

    image_size: int = 64
    patch_size: int = 8
    vision_hidden: int = 32
    vision_layers: int = 2
    vision_heads: int = 2
    hidden: int = 64
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 128
    bpe_vocab_size: int = 400
    max_length: int = 512


def train_bpe(specials: tuple[str, ...], vocab_size: int):
    """A byte-level BPE over `CORPUS` with `specials` first (ids 0..n-1); deterministic."""
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        list(CORPUS) * 4,
        vocab_size=vocab_size,
        min_frequency=1,
        show_progress=False,
        special_tokens=list(specials),
    )
    return bpe._tokenizer


def _checked(tokenizer: Any, specials: tuple[str, ...]) -> Any:
    vocab = tokenizer.get_vocab()
    wrong = [t for t in specials if t not in vocab]
    if wrong:
        raise RuntimeError(f"tiny tokenizer built without the special tokens {wrong}")
    return tokenizer


def tiny_qwen2_vl(spec: TinyChatVlmSpec, seed: int, version: str = "2") -> tuple[Any, Any]:
    """Qwen2-VL's twin (`version` "2.5": Qwen2.5-VL's, whose vision blocks take windowed attention, an MLP with
    its own width and a merger out to the language model's width)."""
    from transformers import Qwen2_5_VLConfig, Qwen2Tokenizer, Qwen2VLConfig, Qwen2VLImageProcessorPil

    tokenizer = Qwen2Tokenizer(
        tokenizer_object=train_bpe(QWEN2_VL_SPECIALS, spec.bpe_vocab_size),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=spec.max_length,
    )
    _checked(tokenizer, QWEN2_VL_SPECIALS)
    pixels = spec.image_size * spec.image_size
    images = Qwen2VLImageProcessorPil(
        min_pixels=pixels, max_pixels=pixels, patch_size=spec.patch_size, merge_size=2, temporal_patch_size=2
    )
    processor_class = (
        image_only_qwen2_5_vl_processor() if version == "2.5" else image_only_qwen2_vl_processor()
    )
    processor = processor_class(image_processor=images, tokenizer=tokenizer, chat_template=QWEN2_VL_TEMPLATE)
    half = spec.hidden // spec.heads // 2  # mrope sections (temporal, height, width) sum to half the head dim
    side = 3 * half // 8
    ids = tokenizer.convert_tokens_to_ids
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": spec.hidden,
        "intermediate_size": spec.intermediate,
        "num_hidden_layers": spec.layers,
        "num_attention_heads": spec.heads,
        "num_key_value_heads": spec.kv_heads,
        "max_position_embeddings": spec.max_length,
        "rope_scaling": {"type": "mrope", "mrope_section": [half - 2 * side, side, side]},
        "bos_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "attention_dropout": 0.0,
    }
    vision = {
        "depth": spec.vision_layers,
        "num_heads": spec.vision_heads,
        "patch_size": spec.patch_size,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
    }
    if version == "2.5":  # windows of 2 x 2 merged patches; the last block attends to the whole image
        vision |= {
            "hidden_size": spec.vision_hidden,
            "intermediate_size": spec.vision_hidden * 2,
            "out_hidden_size": spec.hidden,
            "window_size": spec.patch_size * 2 * 2,
            "fullatt_block_indexes": [spec.vision_layers - 1],
        }
    else:
        vision |= {"embed_dim": spec.vision_hidden, "hidden_size": spec.hidden, "mlp_ratio": 2}
    config = (Qwen2_5_VLConfig if version == "2.5" else Qwen2VLConfig)(
        text_config=text,
        vision_config=vision,
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
        tie_word_embeddings=False,
    )
    parts = QWEN2_5_VL_PARTS if version == "2.5" else QWEN2_VL_PARTS
    return parts.build(config, seed), processor


def tiny_smolvlm(spec: TinyChatVlmSpec, seed: int) -> tuple[Any, Any]:
    from transformers import (
        Idefics3Config,
        Idefics3ImageProcessorPil,
        Idefics3Processor,
        LlamaConfig,
        PreTrainedTokenizerFast,
    )

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=train_bpe(SMOLVLM_SPECIALS, spec.bpe_vocab_size),
        bos_token="<|im_start|>",
        eos_token="<end_of_utterance>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
        model_max_length=spec.max_length,
        extra_special_tokens={
            "image_token": "<image>",
            "fake_image_token": "<fake_token_around_image>",
            "global_image_token": "<global-img>",
            "end_of_utterance_token": "<end_of_utterance>",
        },
    )
    _checked(tokenizer, SMOLVLM_SPECIALS)
    scale = 2
    seq_len = (spec.image_size // spec.patch_size) ** 2 // scale**2
    images = Idefics3ImageProcessorPil(
        do_resize=True,
        size={"longest_edge": spec.image_size},
        do_image_splitting=False,
        max_image_size={"longest_edge": spec.image_size},
    )
    processor = Idefics3Processor(
        image_processor=images, tokenizer=tokenizer, image_seq_len=seq_len, chat_template=SMOLVLM_TEMPLATE
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden,
        intermediate_size=spec.intermediate,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.kv_heads,
        max_position_embeddings=spec.max_length,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    config = Idefics3Config(
        vision_config={
            "hidden_size": spec.vision_hidden,
            "intermediate_size": spec.vision_hidden * 2,
            "num_hidden_layers": spec.vision_layers,
            "num_attention_heads": spec.vision_heads,
            "patch_size": spec.patch_size,
            "image_size": spec.image_size,
        },
        text_config=text.to_dict(),
        scale_factor=scale,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    return SMOLVLM_PARTS.build(config, seed), processor


def tiny_paligemma(spec: TinyChatVlmSpec, seed: int) -> tuple[Any, Any]:
    from transformers import (
        PaliGemmaConfig,
        PaliGemmaProcessor,
        PreTrainedTokenizerFast,
        SiglipImageProcessorPil,
    )

    # The generic fast class, not GemmaTokenizer: loading a saved GemmaTokenizer rebuilds Gemma's own
    # normalizer and pre-tokenizer around the vocabulary, which a byte-level BPE does not fit (every space
    # became <unk>), so a run's saved processor (ZeRO-3's reload, predict) tokenized unlike the trained one.
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=train_bpe(PALIGEMMA_SPECIALS, spec.bpe_vocab_size),
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=spec.max_length,
        extra_special_tokens={"image_token": "<image>"},
    )
    _checked(tokenizer, PALIGEMMA_SPECIALS)
    image_tokens = (spec.image_size // spec.patch_size) ** 2
    images = SiglipImageProcessorPil(
        size={"height": spec.image_size, "width": spec.image_size},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    images.image_seq_length = image_tokens
    processor = PaliGemmaProcessor(image_processor=images, tokenizer=tokenizer)
    config = PaliGemmaConfig(
        vision_config={
            "model_type": "siglip_vision_model",
            "hidden_size": spec.vision_hidden,
            "intermediate_size": spec.vision_hidden * 2,
            "num_hidden_layers": spec.vision_layers,
            "num_attention_heads": spec.vision_heads,
            "patch_size": spec.patch_size,
            "image_size": spec.image_size,
            "projection_dim": spec.hidden,
        },
        text_config={
            "model_type": "gemma",
            "vocab_size": len(tokenizer),
            "hidden_size": spec.hidden,
            "intermediate_size": spec.intermediate,
            "num_hidden_layers": spec.layers,
            "num_attention_heads": spec.heads,
            "num_key_value_heads": 1,
            "head_dim": spec.hidden // spec.heads,
            "max_position_embeddings": spec.max_length,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        projection_dim=spec.hidden,
        pad_token_id=tokenizer.pad_token_id,
    )
    return PALIGEMMA_PARTS.build(config, seed), processor


def tiny_builder(build: Any) -> Any:
    def tiny(spec: TinyChatVlmSpec | None = None, seed: int = 0, **_: Any) -> tuple[Any, Any]:
        """A random-init tiny model of this type and its offline processor; same seed, same weights."""
        return build(spec or TinyChatVlmSpec(), seed)

    return tiny


# ----------------------------------------------------------------------------- real configs (meta device)


def qwen2_vl_2b(**_: Any) -> Any:
    """Qwen2-VL-2B-Instruct's architecture (its config.json): ViT 32 x 1280 + merger → Qwen2 28 x 1536."""
    from transformers import Qwen2VLConfig

    return Qwen2VLConfig(
        text_config={
            "vocab_size": 151936,
            "hidden_size": 1536,
            "intermediate_size": 8960,
            "num_hidden_layers": 28,
            "num_attention_heads": 12,
            "num_key_value_heads": 2,
            "max_position_embeddings": 32768,
            "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
            "tie_word_embeddings": True,
        },
        vision_config={
            "depth": 32,
            "embed_dim": 1280,
            "hidden_size": 1536,
            "num_heads": 16,
            "mlp_ratio": 4,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        tie_word_embeddings=True,
    )


def qwen2_5_vl_3b(**_: Any) -> Any:
    """Qwen2.5-VL-3B-Instruct's architecture (its config.json): windowed ViT 32 x 1280 + merger → Qwen2.5 36 x 2048;
    3,754,622,976 parameters on the meta device (the checkpoint's 3.75B)."""
    from transformers import Qwen2_5_VLConfig

    return Qwen2_5_VLConfig(
        text_config={
            "vocab_size": 151936,
            "hidden_size": 2048,
            "intermediate_size": 11008,
            "num_hidden_layers": 36,
            "num_attention_heads": 16,
            "num_key_value_heads": 2,
            "max_position_embeddings": 128000,
            "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
            "tie_word_embeddings": True,
        },
        vision_config={
            "depth": 32,
            "hidden_size": 1280,
            "intermediate_size": 3420,
            "num_heads": 16,
            "out_hidden_size": 2048,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 112,
            "fullatt_block_indexes": [7, 15, 23, 31],
        },
        tie_word_embeddings=True,
    )


def smolvlm_256m(**_: Any) -> Any:
    """SmolVLM-256M-Instruct's architecture: SigLIP-base-patch16-512 (12 x 768) + pixel shuffle x4 →
    SmolLM2-135M (30 x 576)."""
    from transformers import Idefics3Config

    return Idefics3Config(
        vision_config={
            "hidden_size": 768,
            "intermediate_size": 3072,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "patch_size": 16,
            "image_size": 512,
        },
        text_config={
            "model_type": "llama",
            "vocab_size": 49280,
            "hidden_size": 576,
            "intermediate_size": 1536,
            "num_hidden_layers": 30,
            "num_attention_heads": 9,
            "num_key_value_heads": 3,
            "max_position_embeddings": 8192,
            "tie_word_embeddings": False,
        },
        scale_factor=4,
        image_token_id=49190,  # <image> in SmolVLM's 49,280-token vocabulary (Idefics3's default is beyond it)
        tie_word_embeddings=False,
    )


def paligemma_3b(**_: Any) -> Any:
    """PaliGemma-3B-pt-224's architecture: SigLIP-So400m/14 (27 x 1152) + linear → Gemma-2B (18 x 2048)."""
    from transformers import PaliGemmaConfig

    return PaliGemmaConfig(
        vision_config={
            "model_type": "siglip_vision_model",
            "hidden_size": 1152,
            "intermediate_size": 4304,
            "num_hidden_layers": 27,
            "num_attention_heads": 16,
            "patch_size": 14,
            "image_size": 224,
            "projection_dim": 2048,
            "vision_use_head": False,  # PaliGemma reads SigLIP's patch tokens: no attention-pooling head
        },
        text_config={
            "model_type": "gemma",
            "vocab_size": 257216,
            "hidden_size": 2048,
            "intermediate_size": 16384,
            "num_hidden_layers": 18,
            "num_attention_heads": 8,
            "num_key_value_heads": 1,
            "head_dim": 256,
        },
        projection_dim=2048,
        image_token_id=257152,
    )


# ----------------------------------------------------------------------------------------------- entries

QWEN2_VL_PARTS = HFParts(
    model_class="Qwen2VLForConditionalGeneration",
    processor_class="Qwen2VLProcessor",
    processor_files=PROCESSOR_FILES,
    known_configs={QWEN2_VL_2B: qwen2_vl_2b},
    task_fields=no_task_fields,
)
QWEN2_5_VL_PARTS = HFParts(
    model_class="Qwen2_5_VLForConditionalGeneration",
    processor_class="Qwen2_5_VLProcessor",
    processor_files=PROCESSOR_FILES,
    known_configs={QWEN2_5_VL_3B: qwen2_5_vl_3b},
    task_fields=no_task_fields,
)
SMOLVLM_PARTS = HFParts(
    model_class="Idefics3ForConditionalGeneration",
    processor_class="Idefics3Processor",
    processor_files=PROCESSOR_FILES,
    known_configs={SMOLVLM_256M: smolvlm_256m},
    task_fields=no_task_fields,
)
PALIGEMMA_PARTS = HFParts(
    model_class="PaliGemmaForConditionalGeneration",
    processor_class="PaliGemmaProcessor",
    processor_files=PROCESSOR_FILES,
    known_configs={PALIGEMMA_3B: paligemma_3b},
    task_fields=no_task_fields,
)


def load_qwen2_vl(model_id: str, options: Any = None, **_: Any) -> tuple[Any, Any]:
    """Qwen2VLForConditionalGeneration.from_pretrained + the image-only Qwen2-VL processor (no torchvision)."""
    from trainers.models.hub import load_pretrained

    return load_pretrained(
        model_id,
        QWEN2_VL_PARTS.model_cls(),
        image_only_qwen2_vl_processor(),
        options,
        QWEN2_VL_PARTS.processor_files,
    )


def load_qwen2_5_vl(model_id: str, options: Any = None, **_: Any) -> tuple[Any, Any]:
    """Qwen2_5_VLForConditionalGeneration.from_pretrained + the image-only Qwen2.5-VL processor."""
    from trainers.models.hub import load_pretrained

    return load_pretrained(
        model_id,
        QWEN2_5_VL_PARTS.model_cls(),
        image_only_qwen2_5_vl_processor(),
        options,
        QWEN2_5_VL_PARTS.processor_files,
    )


CHAT_TASKS = ("chat",)

QWEN2_VL = hf_family(
    "qwen2-vl",
    QWEN2_VL_PARTS,
    tasks=CHAT_TASKS,
    tiny=tiny_builder(tiny_qwen2_vl),
    loader=load_qwen2_vl,
    processor_class=image_only_qwen2_vl_processor,
    # the merger is the projector; the vision tower is named by its own parts so a `vision` rule leaves it out
    towers={
        "vision": ("model.visual.patch_embed.", "model.visual.blocks."),
        "projector": ("model.visual.merger.",),
        "language": ("model.language_model.",),
        "head": ("lm_head.",),
    },
)
# Qwen2.5-VL: Qwen2-VL's template, towers and module names; windowed vision attention, its own classes
QWEN2_5_VL = hf_family(
    "qwen2.5-vl",
    QWEN2_5_VL_PARTS,
    tasks=CHAT_TASKS,
    tiny=tiny_builder(lambda spec, seed: tiny_qwen2_vl(spec, seed, version="2.5")),
    loader=load_qwen2_5_vl,
    processor_class=image_only_qwen2_5_vl_processor,
    towers={
        "vision": ("model.visual.patch_embed.", "model.visual.blocks."),
        "projector": ("model.visual.merger.",),
        "language": ("model.language_model.",),
        "head": ("lm_head.",),
    },
)
SMOLVLM = hf_family(
    "smolvlm",
    SMOLVLM_PARTS,
    tasks=CHAT_TASKS,
    tiny=tiny_builder(tiny_smolvlm),
    towers={
        "vision": ("model.vision_model.",),
        "projector": ("model.connector.",),
        "language": ("model.text_model.",),
        "head": ("lm_head.",),
    },
)
# lm_head is tied to the input embedding: deduplicated named_parameters list it under the language model
PALIGEMMA = hf_family(
    "paligemma",
    PALIGEMMA_PARTS,
    tasks=CHAT_TASKS,
    tiny=tiny_builder(tiny_paligemma),
    towers={
        "vision": ("model.vision_tower.",),
        "projector": ("model.multi_modal_projector.",),
        "language": ("model.language_model.",),
        "head": ("lm_head.",),
    },
)
