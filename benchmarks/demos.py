"""Every documented demo command over seeds: the figures the model pages state, from runs anyone can repeat.

python -m benchmarks.demos [--recipes NAME ...] [--seeds 42 1 2 3] [--out DIR] [--keep DIR] [--fresh]
python -m benchmarks.demos --render-docs     # rewrite the docs' figure blocks from the results file

Runs `python launch.py recipes/<name>.py --demo training.seed=S output_dir=<scratch>` as its own process for
every shipped recipe with a demo (found through `benchmarks.shipped_recipes`: a new recipe is measured without
editing a list), once per seed: the model page's command, with only the seed and the output folder added.
Per run, from the run's own `metrics.jsonl` and `training_summary.json`: the headline metric at the first
evaluation (the one before training, epoch 0, since `training.eval_on_start`) and at the best one (and its epoch), the image-blind baseline by the same scorer, `beats_baseline`,
the distinct predictions at the best evaluation, and the wall time of the whole process (imports included).

Results go to `demos.{json,md}` in `--out` (default benchmarks/results), merged run by run: a sweep that stops
continues where it stopped, skipping the runs already measured (`--fresh` starts over). A model page shows a recipe's figures between
`<!-- demo-figures:NAME -->` and `<!-- /demo-figures -->`; `--render-docs` fills those blocks, and
tests/test_demo_figures.py fails when a block and the results file disagree.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS, ROOT, machine
from benchmarks.demo import RECIPES

DEFAULT_SEEDS = (42, 1, 2, 3)  # the recipes' own seed (42) and three others
DOCS = ROOT / "docs"
BLOCK = re.compile(r"<!-- demo-figures:(\w+) -->\n.*?<!-- /demo-figures -->", re.DOTALL)


def run_demo(name: str, seed: int, scratch: Path) -> dict[str, Any]:
    """One documented demo command in its own process; what its output folder says."""
    out = scratch / f"{name}_seed{seed}"
    command = [
        sys.executable,
        "launch.py",
        f"recipes/{name}.py",
        "--demo",
        f"training.seed={seed}",
        f"output_dir={out}",
    ]
    load = os.getloadavg()[0]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        return {"recipe": name, "seed": seed, "failed": done.returncode, "tail": done.stderr[-2000:]}
    summary = json.loads((out / "training_summary.json").read_text())
    metric = summary["best_metric"]["name"]
    rows = [
        row
        for row in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
        if metric in (row.get("eval") or {})
    ]
    evals = [row["eval"] for row in rows]
    baseline = summary.get("baseline") or {}
    return {
        "recipe": name,
        "seed": seed,
        "metric": metric,
        "per_epoch": [e[metric] for e in evals],
        "first": evals[0][metric] if evals else None,
        "first_epoch": rows[0]["epoch"] if rows else None,
        "best": summary["best_metric"]["value"],
        "best_epoch": summary["best_epoch"],
        "baseline": baseline.get(metric),
        "beats_baseline": baseline.get("beats_baseline"),
        "distinct_predictions": (baseline.get("model") or {}).get("distinct_predictions"),
        "at_best": at_best(rows, summary["best_epoch"]),
        "wall_seconds": round(wall, 1),
        "load_average_at_start": round(load, 2),
    }


# Figures a demo's target names beside its headline, shown in the tables when the run logged them (metric names,
# not families: a new task's metric joins by name)
ALSO_SHOWN = ("map_50", "malformed_rate", "oks_ap", "t2i_r1", "i2t_r1", "object_accuracy")


def at_best(rows: list[dict[str, Any]], epoch: float) -> dict[str, float]:
    """Every number the evaluation at the best epoch logged (e.g. detection's map_50 beside its headline map)."""
    row = next((r["eval"] for r in rows if r["epoch"] == epoch), {})
    timing = ("runtime", "samples_per_second", "steps_per_second", "epoch")
    return {k: v for k, v in row.items() if isinstance(v, (int, float)) and k not in timing}


def figures(runs: list[dict[str, Any]], name: str) -> str:
    """The Markdown a model page shows for one recipe: each seed's run, then median and range of the best."""
    rows = [r for r in runs if r["recipe"] == name and "failed" not in r]
    if not rows:
        return f"No measured run of `{name}` in benchmarks/results/demos.json yet.\n"
    metric = rows[0]["metric"]
    also = [k for k in ALSO_SHOWN if k != metric and all(k in r.get("at_best", {}) for r in rows)]
    lines = [
        f"`python launch.py recipes/{name}.py --demo training.seed=S`, measured by `python -m benchmarks.demos` "
        f"(headline `{metric}`; wall time of the whole command on 2 shared CPU cores):",
        "",
        "| seed | start (epoch) | best (epoch) | image-blind baseline | beats it | distinct predictions "
        + "".join(f"| {k} at best " for k in also)
        + "| wall |",
        "|---|---|---|---|---|---|" + "---|" * len(also) + "---|",
    ]
    for r in rows:
        first = "–" if r["first"] is None else f"{r['first']:.3f} ({r['first_epoch']:g})"
        base = "–" if r["baseline"] is None else f"{r['baseline']:.3f}"
        distinct = "–" if r["distinct_predictions"] is None else f"{r['distinct_predictions']:g}"
        beats = {True: "yes", False: "no", None: "–"}[r["beats_baseline"]]
        lines.append(
            f"| {r['seed']} | {first} | {r['best']:.3f} ({r['best_epoch']:g}) | {base} | {beats} | {distinct} "
            + "".join(f"| {r['at_best'][k]:.3f} " for k in also)
            + f"| {r['wall_seconds']:.0f} s |"
        )
    best = [r["best"] for r in rows]
    lines += [
        "",
        f"Best `{metric}` over {len(rows)} seed{'s' if len(rows) > 1 else ''}: median {statistics.median(best):.3f}, "
        f"range {min(best):.3f}–{max(best):.3f}.",
    ]
    return "\n".join(lines) + "\n"


def markdown(runs: list[dict[str, Any]]) -> str:
    names = list(dict.fromkeys(r["recipe"] for r in runs))
    parts = ["# Demo figures over seeds (`python -m benchmarks.demos`)", ""]
    for name in names:
        parts += [f"## {name}", "", figures(runs, name)]
        failed = [r for r in runs if r["recipe"] == name and "failed" in r]
        parts += [f"seed {r['seed']} failed with exit {r['failed']}\n" for r in failed]
    return "\n".join(parts)


def load_runs(path: Path) -> list[dict[str, Any]]:
    return json.loads(path.read_text())["runs"] if path.exists() else []


def render_docs(runs: list[dict[str, Any]], docs: Path = DOCS) -> list[Path]:
    """Fill every figure block of the docs from `runs`; the pages changed."""
    changed = []
    for page in sorted(docs.rglob("*.md")):
        text = page.read_text()
        new = BLOCK.sub(lambda m: block(runs, m.group(1)), text)
        if new != text:
            page.write_text(new)
            changed.append(page)
    return changed


def block(runs: list[dict[str, Any]], name: str) -> str:
    return f"<!-- demo-figures:{name} -->\n{figures(runs, name)}<!-- /demo-figures -->"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--recipes", nargs="*", default=None, help="default: every shipped recipe with a demo"
    )
    parser.add_argument("--seeds", nargs="*", type=int, default=list(DEFAULT_SEEDS))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--fresh", action="store_true", help="forget earlier runs in the results file")
    parser.add_argument("--keep", type=Path, default=None, help="keep each run's output folder here")
    parser.add_argument("--render-docs", action="store_true", help="only rewrite the docs' figure blocks")
    args = parser.parse_args()
    path = args.out / "demos.json"
    runs = [] if args.fresh else load_runs(path)
    if args.render_docs:
        for page in render_docs(runs):
            print(f"updated {page.relative_to(ROOT)}")
        return
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="demos_") as temporary:
        scratch = args.keep or Path(temporary)
        for seed in args.seeds:  # every recipe at one seed before the next seed: a cut sweep covers them all
            for name in args.recipes or list(RECIPES):
                if any((r["recipe"], r["seed"]) == (name, seed) and "failed" not in r for r in runs):
                    continue  # measured in an earlier sweep (--fresh measures again)
                run = run_demo(name, seed, scratch)
                runs = [r for r in runs if (r["recipe"], r["seed"]) != (name, seed)] + [run]
                runs.sort(key=lambda r: (list(RECIPES).index(r["recipe"]), r["seed"] != 42, r["seed"]))
                path.write_text(json.dumps({"machine": machine(), "runs": runs}, indent=1))
                (args.out / "demos.md").write_text(markdown(runs))
                print(json.dumps(run), flush=True)


if __name__ == "__main__":
    main()
