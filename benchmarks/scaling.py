"""Scaling: 1 vs 2 ranks on gloo (DDP, ZeRO-2, ZeRO-3), global samples/s of the ViT LoRA demo.

Each run is `launch.py benchmarks/scaling_recipe.py --demo launch.launcher=torchrun launch.nproc=N
[launch.zero=Z]`: the project's own launch machinery, one OpenMP thread per rank (so 2 ranks use the 2
cores one rank leaves idle). Each rank records its steady-state step times (first step of every epoch
excluded); global samples/s = ranks × per-device batch / rank 0's median step time. The per-device batch is
the same for both, so 2 ranks process twice the samples per step (weak scaling). Runs of one mode alternate
1 and 2 ranks, round after round; the ratio is per round (2 ranks / 1 rank, ideal 2.0).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from benchmarks.common import ROOT, Goal, Result, Spread, interleaved, main_for, paired_ratios, table
from benchmarks.demo import scratch

MODES = {"ddp": (), "zero2": ("launch.zero=2",), "zero3": ("launch.zero=3",)}


def launch(mode: str, nproc: int, steps: int, batch: int) -> float:
    """One run; the global samples/s of its steady-state steps."""
    out = scratch(f"scaling_{mode}_{nproc}")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env.setdefault("TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "torch_extensions"))
    cmd = [
        sys.executable,
        "launch.py",
        "benchmarks/scaling_recipe.py",
        "--demo",
        "--no-wandb",
        "launch.launcher=torchrun",
        f"launch.nproc={nproc}",
        *MODES[mode],
        f"output_dir={out}",
        f"training.batch_size={batch}",
        f"training.max_steps={steps}",
        "training.epochs=1",
        "training.logging_steps=1000",
        "reporting.plots=false",
    ]
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    record = json.loads((out / "step_times_rank0.json").read_text())
    if record["world_size"] != nproc or len(record["times"]) < 2:
        raise RuntimeError(
            f"{mode} x{nproc}: world {record['world_size']}, {len(record['times'])} step times"
        )
    return nproc * record["batch_size"] / statistics.median(record["times"][1:])  # first interval: warm-up


def run(smoke: bool, out: Path) -> Result:
    """Scaling: 1 vs 2 ranks (DDP, ZeRO-2, ZeRO-3) on gloo, global samples/s."""
    modes, rounds, steps = (("ddp",), 1, 4) if smoke else (tuple(MODES), 1, 12)
    batch = 8
    rows = []
    for mode in modes:
        rates = interleaved(
            {"1": lambda m=mode: launch(m, 1, steps, batch), "2": lambda m=mode: launch(m, 2, steps, batch)},
            rounds,
        )
        rows.append(
            {
                "mode": mode,
                "per_device_batch": batch,
                "steps": steps,
                "samples_per_s": {k: Spread.of(v) for k, v in rates.items()},
                "two_vs_one": paired_ratios(rates["2"], rates["1"]),
            }
        )
    goals = [
        Goal(f"{r['mode']}: 2 ranks / 1 rank (global samples/s)", r["two_vs_one"], 1.0, "at_least")
        for r in rows
    ]
    md = table(
        ["mode", "per-device batch", "1 rank samples/s", "2 ranks samples/s", "2 / 1 (ideal 2)"],
        [
            [
                r["mode"],
                r["per_device_batch"],
                r["samples_per_s"]["1"].median,
                r["samples_per_s"]["2"].median,
                r["two_vs_one"].text(),
            ]
            for r in rows
        ],
    )
    md += (
        "\n\nThe goal here is only that a second rank adds throughput (> 1×) on this 2-core machine, which "
        "other jobs share; gloo all-reduce of the LoRA gradients and ZeRO's partitioned steps cost the rest."
    )
    return Result("scaling", "6. Scaling: 1 vs 2 ranks (gloo)", smoke, goals, {"modes": rows}, md)


main = main_for(run)

if __name__ == "__main__":
    raise SystemExit(main())
