"""One-key ablation sweeps: `python launch.py RECIPE --ablate KEY=V1,V2,V3 [--demo] [--launcher slurm]`.

Each value is one run of the recipe with `KEY=value`, in its own output dir `<output_dir>/sweep-<i>` (the
Slurm sweep's layout). An earlier run there is treated as any rerun is (`training.resume`, `trainers.rerun`):
by default a finished identical variant is complete, a different one stops the sweep before anything trains
(exit 2, naming the changes); `training.resume=never` keeps it in `previous-<n>/` and starts over. Without Slurm the runs go one after another on this machine, each exactly as `launch.py` would run
it (in-process, or under the chosen `--launcher`); with `--launcher slurm` they are one job array
(`trainers.launchers.slurm`, one task per value). Every variant is resolved before the first starts, so a
bad value stops the sweep before any training.

The comparison (`<output_dir>/ablation.md`, `.json`, `.png`): per setting, trainable parameters, peak
memory, time per epoch, final and best value of the tracked metric. After a Slurm array finishes:

    python -m trainers.analysis.ablation OUTPUT_DIR      # reads ablation_plan.json and the sweep-<i> runs
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from trainers.atomic_files import atomic_path, write_text
from trainers.errors import RecipeError, UserFacingError

PLAN = "ablation_plan.json"
RESULT = "ablation"


class AblateSyntaxError(RecipeError):
    """`--ablate` is not KEY=V1,V2[,...]."""


@dataclass
class Ablation:
    key: str
    values: list[str]

    def overrides(self, i: int) -> list[str]:
        return [f"{self.key}={self.values[i]}"]

    def setting(self, i: int) -> str:
        return f"{self.key}={self.values[i]}"


def parse_ablate(text: str) -> Ablation:
    """`KEY=V1,V2[,...]` → Ablation; anything else is one paragraph (exit 2)."""
    example = "e.g. --ablate training.lr=1e-4,3e-4,1e-3 or --ablate lora.r=4,8,16"
    key, eq, rest = text.partition("=")
    key = key.strip()
    values = [v.strip() for v in rest.split(",")] if eq else []
    if not eq or not key or any(c in key for c in " ,"):
        problem = "it has no '='" if not eq else f"{key!r} is not a dotted recipe key"
        raise AblateSyntaxError(
            f"--ablate {text!r}: {problem}. Give one recipe key and its values as KEY=V1,V2[,...], {example}."
        )
    if any(not v for v in values):
        raise AblateSyntaxError(
            f"--ablate {text!r}: an empty value (two commas in a row, or a trailing comma). "
            f"Give KEY=V1,V2[,...] with no empty values, {example}."
        )
    if len(values) < 2:
        raise AblateSyntaxError(
            f"--ablate {text!r}: one value compares nothing. Give at least two, {example}."
        )
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise AblateSyntaxError(
            f"--ablate {text!r}: {', '.join(repeated)} given twice. Give each value once, {example}."
        )
    return Ablation(key, values)


def sweep_entries(ablation: Ablation) -> list[str]:
    """The Slurm `--sweep` entries: one job-array task per value."""
    import shlex

    return [shlex.join(ablation.overrides(i)) for i in range(len(ablation.values))]


def variant_dir(root: Path, i: int) -> Path:
    return Path(root) / f"sweep-{i}"


def write_plan(ablation: Ablation, root: Path, recipe_path: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / PLAN
    write_text(
        path,
        json.dumps(
            {
                "recipe": recipe_path,
                "key": ablation.key,
                "values": ablation.values,
                "dirs": [str(variant_dir(root, i)) for i in range(len(ablation.values))],
            },
            indent=2,
        )
        + "\n",
    )
    return path


def run_sweep(ablation: Ablation, root: Path, run_one: Callable[[int], int], progress: bool = True) -> int:
    """Run the variants one after another (`run_one(i)` → exit status); stops at the first that fails."""
    from tqdm.auto import tqdm

    bar = tqdm(total=len(ablation.values), desc=f"ablation {ablation.key}", unit="run", disable=not progress)
    try:
        for i in range(len(ablation.values)):
            bar.set_postfix_str(ablation.setting(i))
            status = run_one(i)
            if status != 0:
                return status
            bar.update(1)
    finally:
        bar.close()
    return 0


# ------------------------------------------------------------------------------------------ comparison


@dataclass
class AblationRow:
    setting: str
    run_dir: str
    trainable_params: int
    total_params: int
    peak_memory_bytes: int | None
    peak_memory_measure: str | None
    seconds_per_epoch: float | None
    metric: str
    final_metric: float | None
    best_metric: float | None


def read_rows(root: Path) -> list[AblationRow]:
    from trainers.analysis.lora_vs_full import read_run

    path = Path(root) / PLAN
    if not path.is_file():
        raise UserFacingError(
            f"{path}: not found; OUTPUT_DIR must be the output dir of a `launch.py --ablate` "
            "sweep (it writes ablation_plan.json there)."
        )
    plan = json.loads(path.read_text())
    rows = []
    for value, directory in zip(plan["values"], plan["dirs"], strict=True):
        run = read_run(Path(directory))
        rows.append(
            AblationRow(
                f"{plan['key']}={value}",
                directory,
                run.trainable_params,
                run.total_params,
                run.peak_memory_bytes,
                run.peak_memory_measure,
                run.seconds_per_epoch,
                run.metric,
                run.final_metric,
                run.best_metric,
            )
        )
    return rows


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def render_markdown(rows: Sequence[AblationRow]) -> str:
    metrics = sorted({r.metric for r in rows})
    lines = [
        "# Ablation",
        "",
        "| setting | trainable params | peak memory | time per epoch | "
        + " | ".join(f"final {m} | best {m}" for m in metrics)
        + " |",
        "|---" * (4 + 2 * len(metrics)) + "|",
    ]
    for r in rows:
        cells = [
            r.setting,
            f"{r.trainable_params:,} of {r.total_params:,}",
            _fmt(r.peak_memory_bytes / 1e6 if r.peak_memory_bytes else None, ".0f") + " MB",
            _fmt(r.seconds_per_epoch, ".2f") + " s",
        ]
        for m in metrics:
            cells += [_fmt(r.final_metric, ".4f"), _fmt(r.best_metric, ".4f")] if r.metric == m else ["", ""]
        lines.append("| " + " | ".join(cells) + " |")
    measures = sorted({r.peak_memory_measure for r in rows if r.peak_memory_measure})
    if measures:
        lines += ["", f"Peak memory: {'; '.join(measures)}."]
    return "\n".join(lines) + "\n"


def plot(rows: Sequence[AblationRow], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [r.setting for r in rows]
    x = range(len(rows))
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    axes[0].bar([i - 0.2 for i in x], [r.final_metric or 0 for r in rows], 0.4, label="final")
    axes[0].bar([i + 0.2 for i in x], [r.best_metric or 0 for r in rows], 0.4, label="best")
    axes[0].set_title(rows[0].metric if rows else "metric")
    axes[0].legend()
    axes[1].bar(x, [r.seconds_per_epoch or 0 for r in rows], color="tab:green")
    axes[1].set_title("time per epoch (s)")
    axes[2].bar(x, [(r.peak_memory_bytes or 0) / 1e6 for r in rows], color="tab:red")
    axes[2].set_title("peak memory (MB)")
    for ax in axes:
        ax.set_xticks(list(x), labels, rotation=20, ha="right", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def write_comparison(root: Path) -> dict[str, Path]:
    rows = read_rows(root)
    paths = {"md": root / f"{RESULT}.md", "json": root / f"{RESULT}.json", "png": root / f"{RESULT}.png"}
    write_text(paths["md"], render_markdown(rows))
    write_text(paths["json"], json.dumps({"rows": [asdict(r) for r in rows]}, indent=2) + "\n")
    plot(rows, paths["png"])
    return paths


def ablate_locally(
    args: argparse.Namespace,
    recipe: Any,
    run_launch: Callable[[argparse.Namespace], int],
    load: Callable[[list[str]], Any],
) -> int:
    """`launch.py --ablate` without Slurm: check every variant, run each as its own `launch.py`, compare."""
    import os

    ablation = parse_ablate(args.ablate)
    root = Path(recipe.resolved_output_dir())
    from trainers import rerun
    from trainers.distributed import launcher_world_size

    for i in range(
        len(ablation.values)
    ):  # a bad value, or an earlier different run, stops it before training
        variant = load([*ablation.overrides(i), f"output_dir={variant_dir(root, i)}"])
        rerun.decide(variant, variant_dir(root, i), launcher_world_size())  # read-only; raises RerunRefused
    main_process = int(os.environ.get("RANK", "0")) == 0
    if not args.dry_run and main_process:
        write_plan(ablation, root, args.recipe)

    def run_one(i: int) -> int:
        variant = argparse.Namespace(
            **{
                **vars(args),
                "ablate": None,
                "output_dir": str(variant_dir(root, i)),
                "overrides": [*args.overrides, *ablation.overrides(i)],
            }
        )
        return run_launch(variant)

    status = run_sweep(ablation, root, run_one, progress=main_process and not args.quiet)
    if status != 0 or args.dry_run or not main_process:
        return status
    paths = write_comparison(root)
    print(
        paths["md"].read_text() + f"\nwrote {paths['md']}, {paths['json'].name} and {paths['png'].name}",
        flush=True,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trainers.analysis.ablation",
        description="Compare the runs of a finished `launch.py --ablate` sweep.",
    )
    parser.add_argument("output_dir", type=Path, help="the sweep's output dir (holds ablation_plan.json)")
    args = parser.parse_args(argv)
    try:
        paths = write_comparison(args.output_dir)
    except UserFacingError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    print(paths["md"].read_text() + f"\nwrote {paths['md']}, {paths['json'].name} and {paths['png'].name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
