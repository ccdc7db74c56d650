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


def check_freeze_report_counts_each_tower(entry: FamilyEntry, tmp_path: Path) -> None:
    """The freeze report (what `--dry-run` prints) has one row per declared tower, in the family's order, that
    adds up to the total; freezing one tower by its prefixes leaves exactly that row untrainable."""
    from trainers.freezing.report import build_freeze_report
    from trainers.freezing.rules import apply_freeze_rules
    from trainers.recipe import Freeze

    model, _ = tiny(entry)
    frozen = next(iter(entry.towers))
    apply_freeze_rules(model, [Freeze(regex=entry.tower_regex(frozen))])
    report = build_freeze_report(model, towers=tuple(entry.towers), tower_of=entry.tower_of)
    counts = entry.tower_counts(model)
    assert [t.module for t in report.towers] == list(entry.towers)
    assert {t.module: t.total for t in report.towers} == counts
    assert sum(t.trainable for t in report.towers) == report.trainable
    for row in report.towers:
        assert row.trainable == (0 if row.module == frozen else counts[row.module]), row
    table = report.render_towers().splitlines()
    assert [line.split()[0] for line in table[2:]] == list(entry.towers)


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


def check_merged_export_loads_with_the_stock_class(entry: FamilyEntry, tmp_path: Path) -> None:
    """`merged/` (a fresh base + the saved adapter, merged by peft and saved by transformers) loads with the
    family's own class, and every adapted layer gives the adapted model's output (`lora.save_merged`)."""
    from types import SimpleNamespace

    from peft import LoraConfig, get_peft_model

    from trainers.lora.export import save_merged

    config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        adapted = get_peft_model(tiny(entry)[0], config).eval()
    adapted.save_pretrained(tmp_path / "adapter")
    untied = SimpleNamespace(tied=[])  # the plan's only field merging reads: nothing was untied here
    save_merged(lambda: tiny(entry)[0], tmp_path / "adapter", tmp_path / "merged", None, untied)
    merged = entry.model_class().from_pretrained(tmp_path / "merged").eval()
    layers = dict(merged.named_modules())
    expected = _lora_outputs(adapted)
    generator = torch.Generator().manual_seed(0)
    for name, (out, _) in expected.items():  # the same inputs, in the same order, as _lora_outputs drew them
        layer = layers[name.removeprefix("base_model.model.")]
        x = torch.randn(2, layer.in_features, generator=generator)
        with torch.no_grad():
            assert torch.allclose(layer(x), out, atol=1e-5), name


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
    check_freeze_report_counts_each_tower,
    check_meta_model_counts_what_materializes,
    check_checkpoint_names_round_trip,
    check_stock_peft_reload,
    check_merged_export_loads_with_the_stock_class,
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


# ------------------------------------------------------------------------------- towers in the dry-run plan


def _demo_recipe_per_family() -> list[str]:
    from benchmarks.shipped_recipes import one_per_family, shipped_demo_recipes

    return sorted(one_per_family(shipped_demo_recipes().values()))


@pytest.mark.parametrize("name", _demo_recipe_per_family())
def test_dry_run_plan_prints_the_family_towers(name, monkeypatch):
    """The plan `--dry-run` prints (and `plan.json` keeps) counts per declared tower of the recipe's family,
    built by the run's own path (load, freeze, LoRA, stages); they add up to the freeze map's totals."""
    from trainers.paths import RECIPES_DIR
    from trainers.plan import build_run_plan, load_model, prepare_model
    from trainers.recipe import load_recipe
    from trainers.recipe.resolved import resolve_recipe

    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    resolved = resolve_recipe(load_recipe(RECIPES_DIR / f"{name}.py", [], demo=True))
    prepared = prepare_model(*load_model(resolved, meta_ok=True), resolved)
    plan = build_run_plan(resolved, prepared)
    towers = {t.module: t for t in plan.freeze.towers}
    assert list(towers) == list(resolved.family.towers)
    assert {t: row.total for t, row in towers.items()} == resolved.family.tower_counts(prepared.core)
    for key in ("total", "trainable", "scheduled"):
        assert sum(getattr(row, key) for row in towers.values()) == getattr(plan.freeze, key), key
    text = plan.render()
    section = text.split("towers (", 1)[1].split("\n\n", 1)[0].splitlines()
    shown = {line.split()[0]: line.split()[1:4] for line in section[3:]}
    assert shown == {t: [f"{r.total:,}", f"{r.trainable:,}", f"{r.scheduled:,}"] for t, r in towers.items()}
    assert plan.to_dict()["freeze"]["towers"][0]["module"] == next(iter(towers))
