"""The demo figures the docs state are the measured ones: every `<!-- demo-figures:NAME -->` block in docs/ is
what `python -m benchmarks.demos --render-docs` renders from benchmarks/results/demos.json, and every shipped
recipe with a demo has its block, measured (nothing here runs a demo: the sweep lives in benchmarks/)."""

from __future__ import annotations

import pytest

from benchmarks.demos import BLOCK, DOCS, RESULTS, block, figures, load_runs
from benchmarks.shipped_recipes import shipped_demo_recipes

RUNS = load_runs(RESULTS / "demos.json")
BLOCKS = {
    match.group(1): (page, match.group(0))
    for page in sorted(DOCS.rglob("*.md"))
    for match in BLOCK.finditer(page.read_text())
}


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_each_figure_block_is_rendered_from_the_results_file(name):
    page, text = BLOCKS[name]
    assert text == block(RUNS, name), f"{page.name}: rerun `python -m benchmarks.demos --render-docs`"


def test_every_shipped_demo_has_measured_figures_in_the_docs():
    recipes = set(shipped_demo_recipes())
    assert set(BLOCKS) == recipes
    measured = {r["recipe"] for r in RUNS if "failed" not in r}
    assert recipes <= measured, f"never measured: {sorted(recipes - measured)}"


def test_figures_state_every_seed_with_median_and_range():
    runs = [
        {
            "recipe": "x",
            "seed": seed,
            "metric": "map",
            "first": 0.0,
            "first_epoch": 1,
            "best": best,
            "best_epoch": 4,
            "baseline": 0.01,
            "beats_baseline": True,
            "distinct_predictions": None,
            "wall_seconds": 10.0,
            "at_best": {"map_50": best + 0.25, "loss": 1.0},
        }
        for seed, best in ((42, 0.5), (1, 0.2), (2, 0.9))
    ]
    text = figures(runs, "x")
    assert text.count("\n| ") == 1 + 3  # the header, then one row per seed
    assert "median 0.500, range 0.200–0.900" in text
    assert "| 1 | 0.000 (1) | 0.200 (4) | 0.010 | yes | – | 0.450 | 10 s |" in text  # map_50 beside map
    assert "| map_50 at best |" in text and "loss at best" not in text
