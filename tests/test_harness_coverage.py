"""The harness follows `recipes/` and the family registry: every shipped demo recipe is in the multi-rank job (or
left out by its family's rule with a reason) and in the benchmark lists, and a new family's recipe is picked up
with no harness edit (a second tiny classification family registered here, its recipe a copy of vit_lora.py).
"""

from __future__ import annotations

import dataclasses
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "tests" / "distributed"))

import rank_modes  # noqa: E402

from benchmarks import checkpoint_size, data_pipeline, memory  # noqa: E402
from benchmarks.demo import RECIPES  # noqa: E402
from benchmarks.shipped_recipes import same_family, shipped_demo_recipes  # noqa: E402
from trainers.models import registry  # noqa: E402

TWIN = None  # the registered twin family's entry (set by the fixture)


def test_every_demo_recipe_runs_on_two_ranks_or_its_family_rule_says_why():
    modes = rank_modes.recipe_modes()
    assert modes and rank_modes.uncovered_recipes() == []
    assert all(mode.engine in rank_modes.ALL_ENGINES for mode in modes.values())
    running = {mode.recipe for mode in modes.values()}
    for name, recipe in RECIPES.items():
        rule = rank_modes.rule_for(recipe.family)
        assert name in running or (rule.recipes is not None and name not in rule.recipes and rule.why), name
    assert all(rule.why for rule in rank_modes.FAMILY_RULES.values())
    assert not set(modes) & set(rank_modes.FEATURE_MODES)


def test_every_demo_recipe_and_family_is_in_the_benchmark_lists():
    files = {p.stem for p in (ROOT / "recipes").glob("*.py")}
    assert set(RECIPES) <= files and RECIPES
    grouped = memory.by_family(list(RECIPES.values()))
    assert sorted(r.name for rs in grouped.values() for r in rs) == sorted(RECIPES)
    families = list(grouped)
    for listed in (data_pipeline.KEYS, checkpoint_size.RECIPES):
        assert set(listed) <= set(RECIPES)
    assert len(data_pipeline.KEYS) == len(families)  # one recipe per family
    with_lora = {f for f, rs in grouped.items() if any(r.lora for r in rs)}
    assert {RECIPES[k].family for k in checkpoint_size.RECIPES} == with_lora


@pytest.fixture
def twin_family(tmp_path, monkeypatch):
    """A second classification family (`vit-twin`, its own registry entry) and a recipes folder holding the
    shipped recipes plus `vit_twin_lora.py`, a copy of vit_lora.py naming the twin."""
    source = (ROOT / "recipes" / "vit_lora.py").read_text()
    family = RECIPES["vit_lora"].family
    assert f'family="{family}"' in source
    entry = registry.get_family(family)
    monkeypatch.setattr(sys.modules[__name__], "TWIN", dataclasses.replace(entry))
    monkeypatch.setitem(registry.FAMILIES, "vit-twin", f"{__name__}:TWIN")
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    for path in (ROOT / "recipes").glob("*.py"):
        (recipes / path.name).write_text(path.read_text())
    (recipes / "vit_twin_lora.py").write_text(
        source.replace(f'family="{family}"', 'family="vit-twin"').replace(
            'name="vit_lora"', 'name="vit_twin_lora"'
        )
    )
    return recipes


def test_a_new_family_recipe_is_picked_up_with_the_generic_rule(twin_family):
    assert not same_family("vit-twin", RECIPES["vit_lora"].family)  # a family of its own
    found = shipped_demo_recipes(twin_family)
    assert set(found) == set(RECIPES) | {"vit_twin_lora"}
    modes = rank_modes.recipe_modes(twin_family)
    twin = {name: mode for name, mode in modes.items() if mode.recipe == "vit_twin_lora"}
    assert {mode.engine for mode in twin.values()} == set(rank_modes.GENERIC.engines)
    assert all(mode.rule == rank_modes.GENERIC for mode in twin.values())
    assert rank_modes.uncovered_recipes(twin_family) == []
    assert {k: v for k, v in modes.items() if k not in twin} == rank_modes.recipe_modes()
    grouped = memory.by_family(list(found.values()))
    assert [r.name for r in grouped["vit-twin"]] == ["vit_twin_lora"]


def test_a_family_rule_applies_to_the_old_and_the_new_id(twin_family, monkeypatch):
    """A rule keyed by a family's new id reaches a recipe spelling an old id of the same registry entry."""
    monkeypatch.setitem(registry.FAMILIES, "vit-twin-renamed", f"{__name__}:TWIN")
    rule = rank_modes.RankRule(engines=("zero3",), why="test")
    monkeypatch.setitem(rank_modes.FAMILY_RULES, "vit-twin-renamed", rule)
    modes = rank_modes.recipe_modes(twin_family)
    assert {m.engine for m in modes.values() if m.recipe == "vit_twin_lora"} == {"zero3"}
