"""The benchmarks' smoke mode end to end: every benchmark runs a few steps and writes complete results.

One `python -m benchmarks.run_all --smoke` process (the benchmarks share its imports). Scaling is left out:
each of its runs is a real torchrun launch (20-90 s here), more than this suite can spend; its full run is
`python -m benchmarks.scaling`. The goals themselves are not asserted (a few steps measure nothing).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

EXPECTED = ("overhead", "eval_speed", "memory", "checkpoint_size", "data_pipeline")


def _finite_spread(spread: dict) -> None:
    values = [spread["median"], spread["min"], spread["max"]]
    assert all(isinstance(v, float) and math.isfinite(v) and v > 0 for v in values), spread
    assert spread["min"] <= spread["median"] <= spread["max"] and spread["n"] >= 1


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.run_all", "--smoke", "--skip", "scaling", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return out


def test_every_benchmark_writes_json_with_machine_goals_and_finite_ratios(smoke: Path):
    for name in EXPECTED:
        record = json.loads((smoke / f"{name}.json").read_text())
        assert record["name"] == name and record["smoke"] is True
        m = record["machine"]
        assert m["date"] and m["cpu_count"] and m["versions"]["torch"] and m["versions"]["transformers"]
        for goal in record["goals"]:
            _finite_spread(goal["ratio"])
            assert isinstance(goal["met"], bool) and goal["direction"] in ("at_most", "at_least")
        assert (smoke / f"{name}.md").read_text().startswith("## ")
    summary = (smoke / "SUMMARY.md").read_text()
    assert "## Goals" in summary and all(f"| {name} |" in summary for name in ("overhead", "eval_speed"))


def test_benchmark_specific_fields(smoke: Path):
    overhead = json.loads((smoke / "overhead.json").read_text())["data"]["recipes"][0]
    _finite_spread(overhead["ours_vs_plain"])
    callbacks = {c["callback"]: c for c in overhead["callbacks"]}
    assert "WorldGuard" in callbacks and "ProgressiveUnfreezing" in callbacks
    assert all(math.isfinite(c["per_step_us"]) for c in callbacks.values())

    speed = json.loads((smoke / "eval_speed.json").read_text())["data"]["recipes"]
    generative = next(r for r in speed if r["generative"])
    for key in ("ours", "bare_batched", "per_image"):
        _finite_spread(generative["rows"][0]["images_per_s"][key])

    memory = json.loads((smoke / "memory.json").read_text())["data"]
    lora = next(r for r in memory["demo_size"] if "LoRA" in r["config"])
    assert 0 < lora["trainable"] < lora["held"]
    assert math.isfinite(lora["measured_vs_computed"]) and lora["measured_vs_computed"] > 0
    real = {r["config"]: r for r in memory["real_size"]}
    full = real["full fine-tune"]
    assert full["zero3_n64"] < full["zero2_n64"] < full["zero1_n64"] < full["total"]

    ckpt = json.loads((smoke / "checkpoint_size.json").read_text())["data"]
    row = ckpt["recipes"][0]
    assert 0 < row["demo"]["adapter_bytes"] < row["demo"]["full_bytes"]
    assert row["demo"]["adapter_vs_theory"] >= 1.0 and row["real"]["adapter_vs_full"] < 0.05
    assert ckpt["skipped"] == []  # every model with a size claim has a recipe

    data = json.loads((smoke / "data_pipeline.json").read_text())["data"]["recipes"][0]
    _finite_spread(data["loader_vs_model"])
