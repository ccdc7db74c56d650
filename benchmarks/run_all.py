"""Run every benchmark (or those named with --only / left out with --skip), then write SUMMARY.md.

python -m benchmarks.run_all [--smoke] [--out DIR] [--only overhead,eval_speed] [--skip scaling]
"""

from __future__ import annotations

import argparse
import importlib
import json
import time
from pathlib import Path

from benchmarks.common import RESULTS, Goal, Result, Spread, machine, quiet

BENCHMARKS = ("overhead", "eval_speed", "memory", "checkpoint_size", "data_pipeline", "scaling")
SUMMARY = "SUMMARY.md"


def run_benchmarks(names: tuple[str, ...], smoke: bool, out: Path) -> list[Result]:
    results = []
    for name in names:
        start = time.perf_counter()
        result = importlib.import_module(f"benchmarks.{name}").run(smoke, out)
        result.data["wall_seconds"] = time.perf_counter() - start
        result.write(out)
        print(f"{name}: {result.data['wall_seconds']:.0f} s", flush=True)
        results.append(result)
    return results


def summary(out: Path) -> str:
    """SUMMARY.md from every benchmark's JSON and Markdown in `out` (one rerun benchmark refreshes its part)."""
    records = [
        (json.loads((out / f"{n}.json").read_text()), (out / f"{n}.md").read_text())
        for n in BENCHMARKS
        if (out / f"{n}.json").is_file()
    ]
    smoke = any(r["smoke"] for r, _ in records)
    # where and with what the newest figures were measured (not this process's machine and versions)
    m = max((r["machine"] for r, _ in records), key=lambda x: x["date"], default=None) or machine()
    v = m["versions"]
    dates = sorted(r["machine"]["date"] for r, _ in records) or [m["date"]]
    lines = [
        "# Benchmarks",
        "",
        f"{'Smoke run (a few steps: numbers not meaningful). ' if smoke else ''}Measured {dates[0]} to {dates[-1]} on "
        f"{m['platform']}, {m['cpu_count']} CPUs (shared with other jobs; load average "
        f"{m['load_average'][0]:.2f} when the newest of them was measured), {m['torch_threads']} torch thread(s); torch {v['torch']}, transformers {v['transformers']}, "
        f"peft {v['peft']}, deepspeed {v['deepspeed']}; commit {(m['git_commit'] or '?')[:10]}.",
        "",
        "Every ratio is ours against a baseline measured side by side in the same process (or the same "
        "launch), round after round in alternating order: median (min–max, number of rounds). Rerun: "
        "`python -m benchmarks.run_all`; one benchmark: `python -m benchmarks.<name>`. JSON per benchmark "
        "next to this file.",
        "",
        "## Goals",
        "",
        "| benchmark | goal | target | measured ratio | |",
        "|---|---|---|---|---|",
    ]
    for record, _ in records:
        for g in record["goals"]:
            goal = Goal(g["name"], Spread(**g["ratio"]), g["target"], g["direction"])
            lines.append(f"| {record['name']} " + goal.row())
    lines.append("")
    for record, section in records:
        date = record["machine"]["date"]
        lines += [
            section.rstrip(),
            "",
            f"<sub>{record['name']}.json, measured {date}, "
            f"{record['data'].get('wall_seconds', 0):.0f} s</sub>",
            "",
        ]
    others = sorted(p.stem for p in out.glob("*.md") if p.stem not in (*BENCHMARKS, Path(SUMMARY).stem))
    if others:  # measurements with a command of their own (`python -m benchmarks.<name>`), not run by run_all
        lines += [
            "## Other results",
            "",
            *(f"- [{n}.md]({n}.md): `python -m benchmarks.{n}`" for n in others),
            "",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the benchmarks and write benchmarks/results/SUMMARY.md")
    parser.add_argument("--smoke", action="store_true", help="a few steps of each: checks they run")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--only", default="", help="comma-separated benchmark names")
    parser.add_argument("--skip", default="", help="comma-separated benchmark names to leave out")
    parser.add_argument(
        "--summary-only", action="store_true", help="rewrite SUMMARY.md from the JSON files in --out"
    )
    args = parser.parse_args(argv)
    names = tuple(
        n for n in (args.only.split(",") if args.only else BENCHMARKS) if n and n not in args.skip.split(",")
    )
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    quiet()
    if not args.summary_only:
        run_benchmarks(names, args.smoke, args.out)
    (args.out / SUMMARY).write_text(summary(args.out) + "\n")
    print(f"written: {args.out / SUMMARY}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
