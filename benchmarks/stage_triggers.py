"""Fixed-epoch stages vs plateau stages on the BLIP progressive demo, same seed, same data, same budget.

python -m benchmarks.stage_triggers [--seeds 42 1] [--epochs N] [--max-train-samples N] [--out DIR]

`fixed`: `recipes/blip_progressive.py --demo` as shipped (stages at epochs 3 and 6). `plateau`: the recipe's
commented alternative (`PLATEAU_STAGES`: each stage opens after 2 evaluations without improvement of the
early-stopping score, its LR re-warming over 100 steps). Per variant: the best score and its epoch, the epochs
run (early stopping may end one sooner), the step each stage opened, wall time, and the task's constant-caption
baseline on the same scorer. Both variants run with each of `--seeds` (default: the recipe's 42). Writes
stage_triggers.{json,md} into `--out` (default benchmarks/results), rewritten after every run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS, machine
from benchmarks.demo import demo_recipe

RECIPE = "blip_progressive"
VARIANTS = ("fixed", "plateau")


def plateau_stages() -> list[Any]:
    from trainers.recipe import Stage

    return [
        Stage(on_plateau=True, patience=2, unfreeze="vision_model.encoder.layers[-6:]", warmup_steps=100),
        Stage(on_plateau=True, patience=2, unfreeze="vision_model.encoder.layers[-9:]", warmup_steps=100),
    ]


def run_variant(name: str, seed: int, epochs: int | None, max_train_samples: int | None) -> dict[str, Any]:
    from trainers.run import run_training

    overrides = [f"training.seed={seed}"]
    overrides += [f"training.epochs={epochs}"] if epochs else []
    overrides += [f"data.max_train_samples={max_train_samples}"] if max_train_samples else []
    recipe = demo_recipe(RECIPE, overrides)
    if name == "plateau":
        recipe = dataclasses.replace(recipe, stages=plateau_stages())
    load_before = os.getloadavg()[
        0
    ]  # the machine is shared: its load says how far the wall time is the run's
    started = time.perf_counter()
    summary = run_training(recipe)
    wall = time.perf_counter() - started
    metric = summary["best_metric"]["name"]
    baseline = summary.get("baseline") or {}
    return {
        "variant": name,
        "seed": seed,
        "stages": summary["stages"],
        "best_metric": summary["best_metric"],
        "best_epoch": summary["best_epoch"],
        "epochs_run": summary["epochs_completed"],
        "global_steps": summary["global_steps"],
        "early_stopping": summary["early_stopping"],
        "baseline": baseline.get(metric),
        "beats_baseline": baseline.get("beats_baseline"),
        "wall_seconds": wall,
        "load_average_1min": [load_before, os.getloadavg()[0]],
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    metric = rows[0]["best_metric"]["name"]
    lines = [
        f"| seed | variant | best {metric} | best at epoch | epochs run | stages opened at step | wall s | "
        f"constant-caption baseline |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        opened = ", ".join(f"{s['stage']}: {s['opened_at_step']}" for s in r["stages"])
        base = r["baseline"]
        lines.append(
            f"| {r['seed']} | {r['variant']} | {r['best_metric']['value']:.4f} | {r['best_epoch']:g} | {r['epochs_run']:g} | "
            f"{opened} | {r['wall_seconds']:.0f} | {base if base is None else f'{base:.4f}'} |"
        )
    return "\n".join(lines) + "\n"


def write(out: Path, machine_facts: Any, rows: list[dict[str, Any]]) -> None:
    (out / "stage_triggers.json").write_text(json.dumps({"machine": machine_facts, "runs": rows}, indent=1))
    (out / "stage_triggers.md").write_text(markdown(rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[42], help="training.seed of each pair of runs"
    )
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        default=None,
        help="run nothing: write the runs of these stage_triggers.json files (variants run as separate "
        "processes) as one results file",
    )
    parser.add_argument("--epochs", type=int, default=None, help="instead of the demo's 10")
    parser.add_argument("--max-train-samples", type=int, default=None, help="a quick check of the script")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.merge:
        parts = [json.loads(path.read_text()) for path in args.merge]
        runs = [r for part in parts for r in part["runs"]]
        rows = sorted(runs, key=lambda r: (r["seed"], VARIANTS.index(r["variant"])))
        write(args.out, [part["machine"] for part in parts], rows)
        print(markdown(rows))
        return
    rows: list[dict[str, Any]] = []
    for seed in args.seeds:
        for name in args.variants:
            rows.append(run_variant(name, seed, args.epochs, args.max_train_samples))
            write(args.out, machine(), rows)  # after every run: a run cut short leaves the ones before it
    print(markdown(rows))


if __name__ == "__main__":
    main()
