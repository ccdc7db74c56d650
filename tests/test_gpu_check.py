"""`python -m benchmarks.gpu_check --smoke`: the GPU check's own script, on CPU with the tiny ViT demo.

The real check needs a GPU (real-size models in bf16); here the same code runs each variant a few steps and
writes its JSON and table. The timings mean nothing on 2 shared cores; what is checked is that every run
trained its steps, the table names each variant and ratio, and the NCCL line and the checkpointing line say
what they did.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import ROOT


def test_gpu_check_smoke_runs_every_variant_and_writes_json_and_table(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_check", "--smoke", "--out", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    data = json.loads((tmp_path / "gpu_check.json").read_text())
    assert data["smoke"] is True and data["device"] == "cpu"
    rows = {r["variant"]: r for r in data["rows"]}
    assert {"ours", "plain Trainer", "ours, workers auto"} <= set(rows)
    for row in rows.values():
        assert row["ok"] and row["steps"] == 4 and row["median_step_s"] > 0 and row["images_per_s"] > 0
    assert rows["ours"]["predicted"] > 0  # the dry-run plan's bytes per device, read from plan.json
    table = (tmp_path / "gpu_check.md").read_text()
    assert "step time ours / plain Trainer" in table and "| vit |" in table
    assert "NCCL" in table
    checkpointing = "ours + checkpointing" in rows
    assert checkpointing or "gradient checkpointing column skipped" in table


def test_a_failed_run_is_listed_and_makes_the_check_exit_non_zero(tmp_path, monkeypatch):
    import benchmarks.gpu_check as gpu_check

    def run_variant(key, family, variant, smoke, overrides, plain=False):
        ok = variant != "plain Trainer"
        return gpu_check.Row(family, key, variant, ok=ok, error=None if ok else "RuntimeError: out of memory")

    monkeypatch.setattr(gpu_check, "run_variant", run_variant)
    assert gpu_check.main(["--smoke", "--out", str(tmp_path)]) == 1
    assert "FAILED: RuntimeError: out of memory" in (tmp_path / "gpu_check.md").read_text()
    rows = json.loads((tmp_path / "gpu_check.json").read_text())["rows"]
    assert [r["ok"] for r in rows if r["variant"] == "plain Trainer"] == [False]
