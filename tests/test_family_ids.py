"""Family ids are model names (`blip`, `vit`, ...); the old ids (`blip-captioning`, ...) keep working for one
release: they resolve with one deprecation line on stderr, and an output dir whose recipe.json holds an old id
still resumes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_rerun_decisions import plant_run
from test_rerun_end_to_end import launch_in_process

from conftest import ROOT, tiny_recipe
from trainers.models import registry
from trainers.rerun import RerunRefused, decide


@pytest.fixture
def fresh_warnings(monkeypatch):
    """Each old id warns once per process: start each test as a fresh process would."""
    monkeypatch.setattr(registry, "_warned", set())


@pytest.mark.parametrize(("old", "new"), sorted(registry.RENAMED_FAMILIES.items()))
def test_an_old_id_resolves_to_its_family_with_one_deprecation_warning(old, new, caplog, fresh_warnings):
    with caplog.at_level("WARNING", logger=registry.__name__):
        entries = [registry.get_family(old) for _ in range(3)]
    assert all(entry is registry.get_family(new) for entry in entries) and new in registry.FAMILIES
    assert [r.getMessage() for r in caplog.records] == [
        f"model.family {old!r} is deprecated and will stop working in the next release; use {new!r}"
    ]
    caplog.clear()
    registry.get_family(new)
    assert not caplog.records


def test_a_recipe_with_an_old_id_runs_with_one_deprecation_line_on_stderr(monkeypatch, fresh_warnings):
    monkeypatch.chdir(ROOT)
    result = launch_in_process(
        "recipes/vit_lora.py", "--demo", "model.family=vit-classification", "--dry-run", "--no-wandb"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    deprecation = [line for line in result.stderr.splitlines() if "deprecated" in line]
    assert len(deprecation) == 1, deprecation
    assert "'vit-classification' is deprecated" in deprecation[0] and "use 'vit'" in deprecation[0]


def _with_family(recipe, family: str):
    recipe.model.family = family
    return recipe


@pytest.mark.parametrize(("saved", "now"), [("blip-captioning", "blip"), ("blip", "blip-captioning")])
def test_an_output_dir_written_under_an_old_id_continues(saved, now, tmp_path, fresh_warnings):
    out = plant_run(
        tmp_path / "run", _with_family(tiny_recipe(tmp_path / "run", resume="auto"), saved), finished=False
    )
    assert json.loads((out / "recipe.json").read_text())["model"]["family"] == saved
    decision = decide(_with_family(tiny_recipe(out, resume="auto"), now), out, world_size=1)
    assert (decision.action, decision.reason, decision.changes) == ("continue", "same recipe", [])
    assert Path(decision.checkpoint).name == "checkpoint-8"


def test_an_output_dir_of_another_family_still_stops(tmp_path):
    out = plant_run(
        tmp_path / "run", _with_family(tiny_recipe(tmp_path / "run", resume="auto"), "vit"), finished=False
    )
    with pytest.raises(RerunRefused, match='model.family: "vit" -> "blip"'):
        decide(tiny_recipe(out, resume="auto"), out, world_size=1)
