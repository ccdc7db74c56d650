"""Fixed-epoch stages vs plateau stages on the BLIP progressive demo, same seed, same data, same budget.

python -m benchmarks.stage_triggers [--epochs N] [--max-train-samples N] [--out DIR]

`fixed`: `recipes/blip_progressive.py --demo` as shipped (stages at epochs 3 and 6). `plateau`: the recipe's
commented alternative (`PLATEAU_STAGES`: each stage opens after 2 evaluations without improvement of the
early-stopping score, its LR re-warming over 100 steps). Per variant: the best score and its epoch, the epochs
run (early stopping may end one sooner), the step each stage opened, wall time, and the task's constant-caption
baseline on the same scorer. Writes stage_triggers.{json,md} into `--out` (default benchmarks/results).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS, machine
from benchmarks.demo import demo_recipe

RECIPE = "blip_progressive"


def plateau_stages() -> list[Any]:
    from trainers.recipe import Stage

    return [
        Stage(on_plateau=True, patience=2, unfreeze="vision_model.encoder.layers[-6:]", warmup_steps=100),
        Stage(on_plateau=True, patience=2, unfreeze="vision_model.encoder.layers[-9:]", warmup_steps=100),
    ]


def run_variant(name: str, epochs: int | None, max_train_samples: int | None) -> dict[str, Any]:
    from trainers.run import run_training

    overrides = [f"training.epochs={epochs}"] if epochs else []
    overrides += [f"data.max_train_samples={max_train_samples}"] if max_train_samples else []
    recipe = demo_recipe(RECIPE, overrides)
    if name == "plateau":
        recipe = dataclasses.replace(recipe, stages=plateau_stages())
    started = time.perf_counter()
    summary = run_training(recipe)
    wall = time.perf_counter() - started
    metric = summary["best_metric"]["name"]
    baseline = summary.get("baseline") or {}
    return {
        "variant": name,
        "stages": summary["stages"],
        "best_metric": summary["best_metric"],
        "best_epoch": summary["best_epoch"],
        "epochs_run": summary["epochs_completed"],
        "global_steps": summary["global_steps"],
        "early_stopping": summary["early_stopping"],
        "baseline": baseline.get(metric),
        "beats_baseline": baseline.get("beats_baseline"),
        "wall_seconds": wall,
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    metric = rows[0]["best_metric"]["name"]
    lines = [
        f"| variant | best {metric} | best at epoch | epochs run | stages opened at step | wall s | "
        f"constant-caption baseline |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        opened = ", ".join(f"{s['stage']}: {s['opened_at_step']}" for s in r["stages"])
        base = r["baseline"]
        lines.append(
            f"| {r['variant']} | {r['best_metric']['value']:.4f} | {r['best_epoch']:g} | {r['epochs_run']:g} | "
            f"{opened} | {r['wall_seconds']:.0f} | {base if base is None else f'{base:.4f}'} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=None, help="instead of the demo's 10")
    parser.add_argument("--max-train-samples", type=int, default=None, help="a quick check of the script")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    rows = [run_variant(name, args.epochs, args.max_train_samples) for name in ("fixed", "plateau")]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "stage_triggers.json").write_text(json.dumps({"machine": machine(), "runs": rows}, indent=1))
    (args.out / "stage_triggers.md").write_text(markdown(rows))
    print(markdown(rows))


if __name__ == "__main__":
    main()
