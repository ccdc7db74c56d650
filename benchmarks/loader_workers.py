"""Loader workers: the ViT demo's training samples/s with loader workers vs `training.num_workers=0`, in one run.

Each round trains the ViT LoRA demo (`recipes/vit_lora.py --demo`, 2 epochs, through `setup_run` and
`complete_run`) once with the workers "auto" gives a GPU rank on this machine and once with `num_workers=0`, alternating
which goes first. Samples/s is the run's own `resources.samples_per_second` (training time only, evaluation
excluded); the ratio is workers over none, per round. With 0 workers the images are decoded, augmented and
processed in the training process between steps; with workers that happens beside the step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.common import Goal, Result, Spread, interleaved, main_for, paired_ratios, table
from benchmarks.demo import demo_context
from trainers.data.loader import resolve_num_workers

RECIPE = "vit_lora"


def train_rate(workers: int | str, epochs: int) -> float:
    from trainers.run import complete_run

    ctx = demo_context(RECIPE, [f"training.num_workers={workers}", f"training.epochs={epochs}"])
    summary = complete_run(ctx)
    return float(summary["resources"]["samples_per_second"])


def run(smoke: bool, out: Path) -> Result:
    """Loader workers: ViT demo training samples/s with num_workers="auto" vs 0."""
    rounds, epochs = (1, 1) if smoke else (3, 2)
    workers = max(1, resolve_num_workers("auto", cuda=True))  # what a GPU rank here would get (>= 1)
    rates = interleaved(
        {"workers": lambda: train_rate(workers, epochs), "none": lambda: train_rate(0, epochs)}, rounds
    )
    ratio = paired_ratios(rates["workers"], rates["none"])
    row: dict[str, Any] = {
        "recipe": RECIPE,
        "num_workers": workers,
        "epochs": epochs,
        "samples_per_s": {k: Spread.of(v) for k, v in rates.items()},
        "workers_vs_none": ratio,
    }
    md = table(
        [
            "recipe",
            "workers",
            "samples/s with workers",
            "samples/s with 0",
            "ratio: median (min–max, rounds)",
        ],
        [
            [
                RECIPE,
                workers,
                row["samples_per_s"]["workers"].median,
                row["samples_per_s"]["none"].median,
                ratio.text(),
            ]
        ],
    )
    md += (
        f'\n\n{workers} worker(s): what `training.num_workers="auto"` gives a GPU rank on this machine (cores '
        "per rank - 1, at most 4; without a GPU it gives 0); each round trains the demo twice, alternating "
        "which goes first."
    )
    goals = [Goal("ViT demo: samples/s with loader workers / without", ratio, 1.0, "at_least")]
    return Result("loader_workers", "Loader workers on the ViT demo", smoke, goals, row, md)


main = main_for(run)

if __name__ == "__main__":
    raise SystemExit(main())
