"""Every shipped recipe's `--demo` writes to `outputs/<name>_demo`, never into the real run's folder."""

from __future__ import annotations

import pytest

from conftest import ROOT
from trainers.recipe import load_recipe

RECIPES = sorted((ROOT / "recipes").glob("*.py"))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_a_demo_writes_to_its_own_folder(path):
    real, demo = load_recipe(str(path)), load_recipe(str(path), demo=True)
    assert demo.resolved_output_dir() == f"outputs/{demo.name}_demo"
    assert real.resolved_output_dir() != demo.resolved_output_dir()


def test_a_command_line_output_dir_still_wins(tmp_path):
    recipe = load_recipe(str(ROOT / "recipes" / "vit_lora.py"), [f"output_dir={tmp_path}"], demo=True)
    assert recipe.resolved_output_dir() == str(tmp_path)
