"""The generic pretrained loader: local dirs, offline and unreachable-Hub errors, load options passed through."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoModel, ViTConfig, ViTForImageClassification, ViTImageProcessorPil

from trainers import hub_probe
from trainers.errors import RecipeError
from trainers.models import hub
from trainers.models.errors import ModelNotAvailableError
from trainers.models.hub import LoadOptions, load_pretrained

MISSING_ID = "trainers-tests/no-such-vit"


def _tiny_vit() -> ViTForImageClassification:
    config = ViTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
        num_labels=3,
    )
    torch.manual_seed(0)
    return ViTForImageClassification(config)


@pytest.fixture(scope="module")
def vit_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("vit")
    _tiny_vit().save_pretrained(directory)
    ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(directory)
    return directory


@pytest.fixture
def no_hub(monkeypatch) -> None:
    """Offline mode off, and the probe says the Hub is unreachable (as it is on this machine)."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub_probe, "hub_reachable", lambda: False)


def _recording(calls: list, base: type) -> type:
    """A subclass of `base` whose from_pretrained records its kwargs, then refuses (no real download)."""

    class Recorder(base):
        @classmethod
        def from_pretrained(cls, source, **kwargs):
            calls.append((base.__name__, source, kwargs))
            if source == MISSING_ID:
                raise OSError(f"{source} is not cached (recorder)")
            return super().from_pretrained(source, **kwargs)

    return Recorder


def test_local_directory_loads_model_and_processor(vit_dir: Path) -> None:
    model, processor = load_pretrained(vit_dir, ViTForImageClassification, ViTImageProcessorPil)
    reference = _tiny_vit().eval()
    pixels = processor(images=[torch.rand(3, 32, 32)], return_tensors="pt", do_rescale=False)["pixel_values"]
    with torch.no_grad():
        assert torch.equal(model.eval()(pixel_values=pixels).logits, reference(pixel_values=pixels).logits)
    assert type(processor) is ViTImageProcessorPil and processor.size == {"height": 32, "width": 32}
    bf16, none = load_pretrained(
        str(vit_dir), ViTForImageClassification, options=LoadOptions(dtype="bfloat16")
    )
    assert none is None and {p.dtype for p in bf16.parameters()} == {torch.bfloat16}


def test_incomplete_or_missing_directory_names_what_is_missing(vit_dir: Path, tmp_path: Path) -> None:
    _tiny_vit().save_pretrained(tmp_path)  # config and weights, no processor files
    with pytest.raises(
        ModelNotAvailableError, match=r"lacks preprocessor_config\.json or processor_config\.json"
    ):
        load_pretrained(tmp_path, ViTForImageClassification, ViTImageProcessorPil)
    model, _ = load_pretrained(tmp_path, ViTForImageClassification)  # no processor asked: complete
    assert isinstance(model, ViTForImageClassification)
    with pytest.raises(ModelNotAvailableError) as info:
        load_pretrained(tmp_path / "nope", ViTForImageClassification, ViTImageProcessorPil)
    message = str(info.value)
    assert "does not exist" in message and "point `model.id=` at a directory holding config.json" in message
    assert "--demo" in message and info.value.exit_code == 2


def test_missing_hub_id_offline_fails_fast_naming_the_id_and_how_to_provide_it(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    calls: list = []
    start = time.monotonic()
    with pytest.raises(ModelNotAvailableError) as info:
        load_pretrained(
            MISSING_ID,
            _recording(calls, ViTForImageClassification),
            ViTImageProcessorPil,
            LoadOptions(revision="v2"),
        )
    elapsed = time.monotonic() - start
    assert elapsed < 2.0, elapsed
    assert calls[0][2]["local_files_only"] is True  # the cache only, no retries against the network
    message = str(info.value)
    assert info.value.model_id == MISSING_ID
    for needle in (
        f"model {MISSING_ID!r} is not in the local Hugging Face cache and the Hub cannot be reached",
        "HF offline mode is on",
        f"hf download {MISSING_ID} --revision v2",
        "HF_HUB_CACHE",
        "model.id=",
        "--demo",
    ):
        assert needle in message, needle


def test_unreachable_hub_without_offline_mode_uses_the_cache_only(no_hub) -> None:
    calls: list = []
    start = time.monotonic()
    with pytest.raises(ModelNotAvailableError, match="the Hub cannot be reached") as info:
        load_pretrained(MISSING_ID, _recording(calls, ViTForImageClassification))
    assert time.monotonic() - start < 2.0
    assert calls[0][2]["local_files_only"] is True
    assert "HF offline mode is on" not in str(info.value)


def test_revision_and_trust_remote_code_are_passed_through(vit_dir: Path, no_hub) -> None:
    calls: list = []
    model_class = _recording(calls, ViTForImageClassification)
    processor_class = _recording(calls, ViTImageProcessorPil)
    load_pretrained(
        vit_dir, model_class, processor_class, LoadOptions(revision="abc123", trust_remote_code=True)
    )
    assert [c[0] for c in calls] == ["ViTForImageClassification", "ViTImageProcessorPil"]
    for _, _, kwargs in calls:
        assert kwargs["revision"] == "abc123" and kwargs["trust_remote_code"] is True
    calls.clear()
    load_pretrained(vit_dir, model_class, processor_class)
    for _, _, kwargs in calls:
        assert kwargs["trust_remote_code"] is False and "revision" not in kwargs  # off by default


CUSTOM_CONFIG = """
from transformers import PretrainedConfig

class TinyCustomConfig(PretrainedConfig):
    model_type = "tiny-custom"

    def __init__(self, width=4, **kwargs):
        self.width = width
        super().__init__(**kwargs)
"""
CUSTOM_MODEL = """
import torch
from transformers import PreTrainedModel
from .configuration_tiny import TinyCustomConfig

class TinyCustomModel(PreTrainedModel):
    config_class = TinyCustomConfig

    def __init__(self, config):
        super().__init__(config)
        self.proj = torch.nn.Linear(config.width, config.width)
        self.post_init()

    def forward(self, x):
        return self.proj(x)
"""


def test_checkpoint_code_runs_only_with_trust_remote_code(tmp_path: Path, monkeypatch) -> None:
    """A directory whose config names its own classes (auto_map): refused by default, loaded when trusted."""
    import transformers.dynamic_module_utils as dynamic

    monkeypatch.setattr(dynamic, "HF_MODULES_CACHE", str(tmp_path / "modules"))
    checkpoint = tmp_path / "custom"
    checkpoint.mkdir()
    (checkpoint / "configuration_tiny.py").write_text(CUSTOM_CONFIG)
    (checkpoint / "modeling_tiny.py").write_text(CUSTOM_MODEL)
    config = {
        "model_type": "tiny-custom",
        "width": 4,
        "architectures": ["TinyCustomModel"],
        "auto_map": {
            "AutoConfig": "configuration_tiny.TinyCustomConfig",
            "AutoModel": "modeling_tiny.TinyCustomModel",
        },
    }
    (checkpoint / "config.json").write_text(json.dumps(config))
    from safetensors.torch import save_file

    save_file(
        {"proj.weight": torch.eye(4), "proj.bias": torch.zeros(4)}, str(checkpoint / "model.safetensors")
    )
    with pytest.raises(RecipeError, match=r"ships its own Python code.*model\.trust_remote_code=true"):
        load_pretrained(checkpoint, AutoModel)
    model, _ = load_pretrained(checkpoint, AutoModel, options=LoadOptions(trust_remote_code=True))
    assert type(model).__name__ == "TinyCustomModel"
    assert torch.equal(model(torch.ones(1, 4)), torch.ones(1, 4))


def test_dtype_names_are_checked() -> None:
    assert hub._dtype("bfloat16") is torch.bfloat16 and hub._dtype("auto") == "auto"
    with pytest.raises(RecipeError, match="model.dtype='fp33'"):
        hub._dtype("fp33")
