"""The chat demos against their most-frequent-answer baseline, over seeds: does each one learn to answer?

python -m benchmarks.chat_demos [--recipes NAME ...] [--seeds 42 1 2] [--epochs N] [--out DIR]

Runs `python launch.py recipes/<r>.py --demo` in-process for every shipped recipe whose data is chat (found
through `benchmarks.shipped_recipes`, so a new chat recipe is measured without editing a list), once per seed.
Per run: exact match after every epoch, the best and its epoch, the baseline (the most frequent training answer
given for every val question), the margin best - baseline, seconds per epoch. Writes chat_demos.{json,md} into
`--out` (default benchmarks/results). The CI test keeps to one short run (tests/tasks/chat/test_chat_demo.py);
its margin comes from these numbers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS, machine
from benchmarks.demo import RECIPES, demo_recipe

CHAT = "ChatData"


def chat_recipes() -> list[str]:
    """The shipped recipes with a demo whose data config is the chat task's."""
    return [name for name, r in RECIPES.items() if r.data_kind == CHAT]


def run_demo(name: str, seed: int, epochs: int | None) -> dict[str, Any]:
    from trainers.run import run_training

    overrides = [f"training.seed={seed}", *([f"training.epochs={epochs}"] if epochs else [])]
    recipe = demo_recipe(name, overrides)
    started = time.perf_counter()
    summary = run_training(recipe)
    wall = time.perf_counter() - started
    history = [
        json.loads(line)
        for line in (Path(recipe.output_dir) / "metrics.jsonl").read_text().splitlines()
        if line.strip()
    ]
    per_epoch = [h["eval"]["exact_match"] for h in history if "exact_match" in (h.get("eval") or {})]
    baseline = summary["baseline"]["exact_match"]
    best = summary["best_metric"]["value"]
    return {
        "recipe": name,
        "seed": seed,
        "exact_match_per_epoch": per_epoch,
        "best": best,
        "best_epoch": summary["best_epoch"],
        "baseline": baseline,
        "baseline_answer": summary["baseline"]["answer"],
        "margin": best - baseline,
        "seconds_per_epoch": summary["seconds_per_epoch"],
        "wall_seconds": wall,
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| demo | seed | exact match per epoch | best (epoch) | baseline | margin | s / epoch |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        epochs = ", ".join(f"{v:.2f}" for v in r["exact_match_per_epoch"])
        lines.append(
            f"| {r['recipe']} | {r['seed']} | {epochs} | {r['best']:.3f} ({r['best_epoch']:g}) | "
            f"{r['baseline']:.3f} | {r['margin']:+.3f} | {statistics.median(r['seconds_per_epoch']):.1f} |"
        )
    by_recipe: dict[str, list[float]] = {}
    for r in rows:
        by_recipe.setdefault(r["recipe"], []).append(r["margin"])
    lines += ["", "| demo | runs | smallest margin | median margin |", "|---|---|---|---|"]
    for name, margins in by_recipe.items():
        lines.append(f"| {name} | {len(margins)} | {min(margins):+.3f} | {statistics.median(margins):+.3f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="*", default=None, help="default: every chat recipe with a demo")
    parser.add_argument("--seeds", nargs="*", type=int, default=[42, 1, 2])
    parser.add_argument("--epochs", type=int, default=None, help="instead of each demo's own")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    rows = [
        run_demo(name, seed, args.epochs) for name in (args.recipes or chat_recipes()) for seed in args.seeds
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "chat_demos.json").write_text(json.dumps({"machine": machine(), "runs": rows}, indent=1))
    (args.out / "chat_demos.md").write_text(markdown(rows))
    print(markdown(rows))


if __name__ == "__main__":
    main()
