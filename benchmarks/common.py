"""What every benchmark shares: ratio statistics, interleaved rounds, machine facts, JSON + Markdown output."""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from trainers.paths import PROJECT_ROOT

ROOT = PROJECT_ROOT
RESULTS = ROOT / "benchmarks" / "results"
PACKAGES = ("torch", "transformers", "peft", "accelerate", "deepspeed", "bitsandbytes")


@dataclass
class Spread:
    """Median, min and max of repeated measurements (ratios or rates)."""

    median: float
    min: float
    max: float
    n: int
    values: list[float] = field(default_factory=list)

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        if not values:
            raise ValueError("no measurements")
        vals = [float(v) for v in values]
        return cls(statistics.median(vals), min(vals), max(vals), len(vals), vals)

    def text(self, digits: int = 3) -> str:
        return f"{self.median:.{digits}f} ({self.min:.{digits}f}–{self.max:.{digits}f}, n={self.n})"


@dataclass
class Goal:
    """One goal of a benchmark: `ratio` compared with `target` (`at_most` or `at_least`)."""

    name: str
    ratio: Spread
    target: float
    direction: str  # "at_most" | "at_least"

    @property
    def met(self) -> bool:
        r = self.ratio.median
        return r <= self.target if self.direction == "at_most" else r >= self.target

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "met": self.met}

    def row(self) -> str:
        sign = "≤" if self.direction == "at_most" else "≥"
        return f"| {self.name} | {sign} {self.target:g} | {self.ratio.text()} | {'met' if self.met else 'not met'} |"


def interleaved(candidates: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Call each candidate once per round, in an order that alternates round to round; their returned values."""
    names = list(candidates)
    out: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            out[name].append(candidates[name]())
    return out


def paired_ratios(num: Sequence[float], den: Sequence[float]) -> Spread:
    """Per-round ratios num[i] / den[i] (both measured in round i)."""
    return Spread.of([a / b for a, b in zip(num, den, strict=True)])


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _git_commit() -> str | None:
    try:
        return (
            subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
            ).stdout.strip()
            or None
        )
    except OSError:
        return None


def machine() -> dict[str, Any]:
    """Where and with what the numbers were taken."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    import torch

    return {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": list(os.getloadavg()),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "versions": versions,
        "git_commit": _git_commit(),
    }


def _clean(value: Any) -> Any:
    """JSON-safe: dataclasses to dicts, non-finite floats to None."""
    if isinstance(value, Spread | Goal):
        return _clean(value.to_dict() if isinstance(value, Goal) else asdict(value))
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass
class Result:
    """One benchmark's output: goals (ratios with spread), free-form rows, and its Markdown section."""

    name: str
    title: str
    smoke: bool
    goals: list[Goal]
    data: dict[str, Any]
    markdown: str

    def to_dict(self) -> dict[str, Any]:
        return _clean(
            {
                "name": self.name,
                "title": self.title,
                "smoke": self.smoke,
                "machine": machine(),
                "goals": self.goals,
                "data": self.data,
            }
        )

    def write(self, out: Path) -> Path:
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{self.name}.json"
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        (out / f"{self.name}.md").write_text(self.section() + "\n")
        return path

    def section(self) -> str:
        lines = [f"## {self.title}", ""]
        if self.goals:
            lines += ["| goal | target | measured ratio: median (min–max, rounds) | |", "|---|---|---|---|"]
            lines += [g.row() for g in self.goals]
            lines.append("")
        lines.append(self.markdown)
        return "\n".join(lines)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:,.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
        if isinstance(v, int):
            return f"{v:,}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def quiet() -> None:
    """Keep the benchmark's output to its own lines (library warnings and progress bars off)."""
    import logging
    import warnings

    os.chdir(ROOT)  # recipes name their data relative to the repository root
    # One thread unless told otherwise: on a shared machine a 2-thread OpenMP pool with a busy core spins
    # at its barriers and makes steps ~20x slower, which would drown every ratio in noise.
    import torch

    torch.set_num_threads(int(os.environ.setdefault("OMP_NUM_THREADS", "1")))

    warnings.filterwarnings("ignore")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    logging.getLogger("trainers").setLevel(logging.WARNING)


def main_for(run: Callable[[bool, Path], Result]) -> Callable[[list[str] | None], int]:
    """The `python -m benchmarks.X [--smoke] [--out DIR]` entry point of one benchmark."""

    def main(argv: list[str] | None = None) -> int:
        parser = argparse.ArgumentParser(description=(run.__doc__ or "").strip().splitlines()[0])
        parser.add_argument("--smoke", action="store_true", help="a few steps: checks the benchmark runs")
        parser.add_argument("--out", type=Path, default=RESULTS, help="where the JSON and Markdown go")
        args = parser.parse_args(argv)
        quiet()
        result = run(args.smoke, args.out)
        path = result.write(args.out)
        print(result.section())
        print(f"\nwritten: {path}")
        return 0

    return main
