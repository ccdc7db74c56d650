"""The tiny offline BLIP and the pretrained loader's offline behaviour."""

from __future__ import annotations

import math
import socket
import time
from pathlib import Path

import pytest
import torch
import transformers
from transformers import BlipImageProcessorPil
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from trainers.hub_probe import hub_reachable
from trainers.models.blip import (
    BLIP_BOS_TOKEN_ID,
    BLIP_SEP_TOKEN_ID,
    TinyBlipSpec,
    build_tiny_blip,
    load_blip_captioning,
)
from trainers.models.errors import ModelNotAvailableError

CAPTIONS = ["a red circle above a blue square", "a green triangle left of a yellow circle"]
GENERATE = {
    "num_beams": 5,
    "no_repeat_ngram_size": 2,
    "repetition_penalty": 1.1,
    "length_penalty": 1.0,
    "max_length": 60,
}


@pytest.fixture(autouse=True)
def _one_thread():
    """Ops this small lose more to thread hand-offs than they gain; on a busy 2-core box, 25x (1 s vs 25 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_blip()


def _batch(processor, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    text = processor.tokenizer(CAPTIONS, padding="longest", return_tensors="pt", return_token_type_ids=False)
    ids = text["input_ids"].clone()
    ids[:, 0] = BLIP_BOS_TOKEN_ID
    return {
        "pixel_values": torch.randn(len(CAPTIONS), 3, 32, 32, generator=generator),
        "input_ids": ids,
        "attention_mask": text["attention_mask"],
        "labels": ids.masked_fill(text["attention_mask"] == 0, -100),
    }


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# -------------------------------------------------------------------------------------- tokenizer/processor


def test_tokenizer_is_blips_bert_wordpiece(tiny) -> None:
    tokenizer = tiny[1].tokenizer
    assert len(tokenizer) == 30524
    assert tokenizer.bos_token == "[DEC]" and tokenizer.bos_token_id == 30522
    assert tokenizer.convert_tokens_to_ids("[ENC]") == 30523
    assert (tokenizer.pad_token_id, tokenizer.sep_token_id, tokenizer.cls_token_id) == (0, 102, 101)
    ids = tokenizer("a red circle above a blue square")["input_ids"]
    assert ids == [101, 1037, 2417, 4418, 2682, 1037, 2630, 2675, 102]
    assert tokenizer.unk_token_id not in tokenizer("Two zebras grazing near the lake")["input_ids"]


def test_image_processor_is_torchvision_free_and_blip_normalised(tiny) -> None:
    image_processor = tiny[1].image_processor
    assert type(image_processor) is BlipImageProcessorPil
    assert (image_processor.size.height, image_processor.size.width) == (32, 32)
    assert list(image_processor.image_mean) == list(OPENAI_CLIP_MEAN)
    assert list(image_processor.image_std) == list(OPENAI_CLIP_STD)


# --------------------------------------------------------------------------------------------------- model


def test_tiny_config_matches_blip_layout_and_ids(tiny) -> None:
    model = tiny[0]
    assert (
        len(model.vision_model.encoder.layers) == 12
    )  # layers[-3:] etc. mean what they mean on the base model
    text = model.config.text_config
    assert (text.bos_token_id, text.pad_token_id, text.sep_token_id, text.vocab_size) == (
        30522,
        0,
        102,
        30524,
    )
    assert text.encoder_hidden_size == model.config.vision_config.hidden_size
    assert model.config.vision_config.initializer_range == 0.02
    fc1 = model.vision_model.encoder.layers[0].mlp.fc1.weight
    assert 0.01 < fc1.std().item() < 0.03, (
        "vision weights initialised near zero (BlipVisionConfig default 1e-10)"
    )
    head = model.text_decoder.cls.predictions.decoder.weight
    assert head is model.text_decoder.bert.embeddings.word_embeddings.weight


def test_build_is_seeded_and_leaves_global_rng_alone(tiny) -> None:
    state = torch.random.get_rng_state()
    spec = TinyBlipSpec(vision_num_layers=1, text_num_layers=1)
    a, _ = build_tiny_blip(spec, seed=1)
    b, _ = build_tiny_blip(spec, seed=1)
    c, _ = build_tiny_blip(spec, seed=2)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert _same_weights(a, b) and not _same_weights(a, c)


def test_forward_loss_is_finite_and_one_step_reduces_it() -> None:
    model, processor = build_tiny_blip(seed=0)
    batch = _batch(processor)
    model.train()
    loss = model(**batch).loss
    assert math.isfinite(loss.item()) and abs(loss.item() - math.log(30524)) < 1.0  # near-uniform at init
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss.backward()
    optimizer.step()
    after = model(**batch).loss.item()
    assert after < loss.item() - 0.05, (loss.item(), after)


def test_batched_beam_generate_starts_at_bos_and_stops_at_sep(tiny) -> None:
    model, processor = build_tiny_blip(TinyBlipSpec(vision_num_layers=2), seed=0)
    pixel_values = _batch(processor)["pixel_values"]
    model.eval()
    out = model.generate(pixel_values=pixel_values, **GENERATE)
    assert out.shape[0] == 2 and out.shape[1] <= 60
    assert out[:, 0].tolist() == [BLIP_BOS_TOKEN_ID] * 2
    with torch.no_grad():  # make [SEP] the only likely token: generation must end right after bos
        model.text_decoder.cls.predictions.bias[BLIP_SEP_TOKEN_ID] = 100.0
    out = model.generate(pixel_values=pixel_values, **GENERATE)
    assert out.tolist() == [[BLIP_BOS_TOKEN_ID, BLIP_SEP_TOKEN_ID]] * 2


# -------------------------------------------------------------------------------------------------- loading


def test_save_and_reload_through_the_pretrained_loader(tiny, tmp_path: Path) -> None:
    model, processor = tiny
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded, loaded_processor = load_blip_captioning(str(tmp_path))
    assert _same_weights(model, loaded)
    assert loaded.text_decoder.cls.predictions.decoder.weight is loaded.get_input_embeddings().weight
    assert type(loaded_processor.image_processor) is BlipImageProcessorPil
    assert len(loaded_processor.tokenizer) == 30524 and loaded_processor.tokenizer.bos_token_id == 30522
    batch = _batch(loaded_processor)
    model.eval()
    loaded.eval()
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, loaded(**batch).logits)


def test_incomplete_or_missing_local_dir_is_model_not_available(tiny, tmp_path: Path) -> None:
    tiny[1].save_pretrained(tmp_path)  # processor only: no config, no weights
    with pytest.raises(ModelNotAvailableError, match="lacks config.json; model.safetensors") as info:
        load_blip_captioning(str(tmp_path))
    assert "--demo" in str(info.value) and str(tmp_path) in str(info.value)
    with pytest.raises(ModelNotAvailableError, match="does not exist"):
        load_blip_captioning(str(tmp_path / "nope"))


@pytest.fixture
def empty_hf_cache(monkeypatch, tmp_path: Path) -> Path:
    """An empty Hugging Face cache, so what this machine happens to have cached cannot change the outcome.

    huggingface_hub reads HF_HUB_CACHE once, at import; transformers and huggingface_hub look the constant
    up at call time, so patching it (and the variables, for anything started from here) is enough.
    """
    from huggingface_hub import constants

    cache = tmp_path / "hf-home" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(cache.parent))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_missing_hub_id_offline_fails_fast_with_instructions(monkeypatch, empty_hf_cache) -> None:
    from huggingface_hub import try_to_load_from_cache

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    model_id = "Salesforce/blip-image-captioning-base"
    assert try_to_load_from_cache(model_id, "config.json") is None  # the isolated cache is the one consulted
    monkeypatch.setattr(
        transformers, "BlipForConditionalGeneration", _local_only(transformers.BlipForConditionalGeneration)
    )  # blip.py imports it at call time
    start = time.monotonic()
    with pytest.raises(ModelNotAvailableError) as info:
        load_blip_captioning(model_id)
    assert time.monotonic() - start < 5
    message = str(info.value)
    assert info.value.model_id == model_id
    for needle in (
        model_id,
        "not in the local Hugging Face cache",
        "cannot be reached",
        f"hf download {model_id}",
        "huggingface-cli download",
        "HF_HOME",
        "model.id=",
        "--demo",
    ):
        assert needle in message, needle


def test_unreachable_hub_is_detected_without_offline_mode(monkeypatch, empty_hf_cache) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr("trainers.hub_probe.hub_reachable", lambda *a, **k: False)
    monkeypatch.setattr(
        transformers, "BlipForConditionalGeneration", _local_only(transformers.BlipForConditionalGeneration)
    )  # blip.py imports it at call time
    start = time.monotonic()
    with pytest.raises(ModelNotAvailableError, match="the Hub cannot be reached"):
        load_blip_captioning("Salesforce/blip-image-captioning-base")
    assert time.monotonic() - start < 5


def test_hub_probe_sees_closed_and_open_ports(monkeypatch) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert hub_reachable(f"http://127.0.0.1:{port}", timeout=2.0)
    start = time.monotonic()
    assert not hub_reachable(f"http://127.0.0.1:{port}", timeout=2.0)  # closed now: refused at once
    assert time.monotonic() - start < 2.5


def _local_only(model_class):
    """Guard: an unreachable Hub or offline mode must load with local_files_only (no network attempt)."""

    class Guarded:
        @staticmethod
        def from_pretrained(source, **kwargs):
            assert kwargs.get("local_files_only"), (
                "offline mode / unreachable Hub must load with local_files_only"
            )
            return model_class.from_pretrained(source, **kwargs)

    return Guarded
