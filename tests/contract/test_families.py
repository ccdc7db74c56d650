"""What every registered model family promises, checked for each entry of `trainers.models.registry.FAMILIES`.

A family is registered by one line; these checks then cover it with no edit here: its tiny model builds offline
(from the family's own `tiny_task_kwargs`), its towers cover every parameter, its meta-device model of an
architecture has the parameters the materialized one has, its checkpoints hold every tensor under the name the
model loads, and a LoRA adapter saved from it reloads with stock peft to the same outputs.
`test_a_new_family_is_covered_without_editing_the_checks` registers a second family and runs every check on it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from trainers.checkpoints import save_under_model_names
from trainers.errors import RecipeError
from trainers.models import registry
from trainers.models.family import FamilyEntry
from trainers.trainer import tied_names
from trainers.zero3 import param_numel


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No check may reach the Hub: offline mode on, and a probe of it fails the test."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("trainers.hub_probe.hub_reachable", lambda *a, **k: pytest.fail("hub probed"))


def tiny(entry: FamilyEntry, seed: int = 0) -> tuple[Any, Any]:
    """The family's tiny model at its default spec, with what the family says its tiny build needs from a task."""
    return entry.build_tiny()(None, seed=seed, **entry.tiny_task_kwargs)


def unique_params(model: torch.nn.Module) -> int:
    return sum(param_numel(p) for p in model.parameters())


# ------------------------------------------------------------------------------------------ the checks


def check_tiny_build_is_offline_and_seeded(entry: FamilyEntry, tmp_path: Path) -> None:
    model, processor = tiny(entry)
    again, _ = tiny(entry)
    other, _ = tiny(entry, seed=1)
    assert processor is not None and unique_params(model) > 0
    state, same, different = model.state_dict(), again.state_dict(), other.state_dict()
    assert all(torch.equal(state[k], same[k]) for k in state)
    assert any(not torch.equal(state[k], different[k]) for k in state if state[k].is_floating_point())


def check_towers_cover_every_parameter(entry: FamilyEntry, tmp_path: Path) -> None:
    model, _ = tiny(entry)
    counts = entry.tower_counts(model)  # raises for a parameter in no tower
    assert sum(counts.values()) == unique_params(model)


def check_meta_model_counts_what_materializes(entry: FamilyEntry, tmp_path: Path) -> None:
    """The meta-device model of the tiny architecture (read from its saved config) has the materialized tiny
    model's parameters; every known hub id builds on the meta device without any file."""
    model, _ = tiny(entry)
    model.save_pretrained(tmp_path / "tiny")
    meta = entry.meta_model(str(tmp_path / "tiny"), **entry.tiny_task_kwargs)
    assert meta is not None and all(p.device.type == "meta" for p in meta.parameters())
    assert unique_params(meta) == unique_params(model)
    assert entry.tower_counts(meta) == entry.tower_counts(model)
    for model_id in entry.known_ids:
        known = entry.meta_model(model_id, **entry.tiny_task_kwargs)
        assert known is not None, model_id
        assert all(p.device.type == "meta" for p in known.parameters())
        assert sum(entry.tower_counts(known).values()) == unique_params(known) > unique_params(model)
    assert entry.meta_model("someone/not-a-known-model", **entry.tiny_task_kwargs) is None


def check_checkpoint_names_round_trip(entry: FamilyEntry, tmp_path: Path) -> None:
    """A checkpoint holds every tensor under the name the model loads (the Trainer's reload skips any other
    name); an export is what transformers writes, and the family's class loads it back whole."""
    model, _ = tiny(entry)
    with save_under_model_names(model):
        model.save_pretrained(tmp_path / "checkpoint")
    saved = set(load_file(tmp_path / "checkpoint" / "model.safetensors"))
    aliases = {n for names in tied_names(model) for n in names[1:]}
    assert saved <= set(model.state_dict())
    missing = set(model.state_dict()) - saved - aliases
    assert not missing, sorted(missing)[:5]
    model.save_pretrained(tmp_path / "export")
    reloaded = entry.model_class().from_pretrained(tmp_path / "export").state_dict()
    state = model.state_dict()
    assert set(reloaded) == set(state)
    assert all(torch.equal(reloaded[k], state[k]) for k in state), entry.name


def _lora_outputs(model: torch.nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Each LoRA-wrapped layer's output on one fixed input, with and without its adapter (generic: no family's
    model inputs needed)."""
    outputs = {}
    generator = torch.Generator().manual_seed(0)
    for name, module in model.named_modules():
        if hasattr(module, "lora_A") and hasattr(module, "base_layer"):
            x = torch.randn(2, module.in_features, generator=generator)
            with torch.no_grad():
                outputs[name] = (module(x), module.base_layer(x))
    return outputs


def check_stock_peft_reload(entry: FamilyEntry, tmp_path: Path) -> None:
    """An adapter saved from the tiny model reloads with `PeftModel.from_pretrained` onto a fresh tiny model
    and gives the same outputs (the adapter is random, so it does change them)."""
    from peft import LoraConfig, PeftModel, get_peft_model

    config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        adapted = get_peft_model(tiny(entry)[0], config).eval()
    expected = _lora_outputs(adapted)
    assert expected, "no layer took a LoRA adapter"
    assert all(not torch.allclose(out, plain) for out, plain in expected.values())
    adapted.save_pretrained(tmp_path / "adapter")
    reloaded = PeftModel.from_pretrained(tiny(entry)[0], tmp_path / "adapter").eval()
    got = _lora_outputs(reloaded)
    assert got.keys() == expected.keys()
    for name, (out, _) in expected.items():
        assert torch.allclose(got[name][0], out, atol=1e-6), name


def check_layer_layout_places_every_tower_parameter(entry: FamilyEntry, tmp_path: Path) -> None:
    """Layer-wise LR decay reads the family's layout: every parameter of a non-head tower sits in a layer, in the
    tiny model and in each known hub id's architecture; a family without a layout refuses layer decay."""
    if not entry.layers:
        with pytest.raises(RecipeError, match="declares no layer layout"):
            entry.check_layer_decay(["training.layer_decay=0.75"])
        return
    model, _ = tiny(entry)
    assert entry.unplaced_parameters(model) == []
    for model_id in entry.known_ids:
        assert entry.unplaced_parameters(entry.meta_model(model_id, **entry.tiny_task_kwargs)) == [], model_id


CHECKS = (
    check_tiny_build_is_offline_and_seeded,
    check_towers_cover_every_parameter,
    check_meta_model_counts_what_materializes,
    check_checkpoint_names_round_trip,
    check_stock_peft_reload,
    check_layer_layout_places_every_tower_parameter,
)


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
@pytest.mark.parametrize("family", sorted(registry.FAMILIES))
def test_family_contract(family, check, tmp_path):
    check(registry.get_family(family), tmp_path)


# ------------------------------------------------------------------------- a family added by one line

COPY_OF_VIT = None  # set by the test below: a second classification family, registered as `vit-copy`


def test_a_new_family_is_covered_without_editing_the_checks(monkeypatch, tmp_path):
    from dataclasses import replace

    from trainers.models.vit import VIT_CLASSIFICATION

    monkeypatch.setattr(
        sys.modules[__name__], "COPY_OF_VIT", replace(VIT_CLASSIFICATION, name="vit-copy"), raising=True
    )
    monkeypatch.setitem(registry.FAMILIES, "vit-copy", f"{__name__}:COPY_OF_VIT")
    entry = registry.get_family("vit-copy")
    assert entry.name == "vit-copy" and entry.serves("classification")
    for check in CHECKS:
        (tmp_path / check.__name__).mkdir()
        check(entry, tmp_path / check.__name__)
