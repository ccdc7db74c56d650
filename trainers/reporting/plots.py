"""PNG plots of a finished run: training loss per logging step, validation metrics per epoch.

`val_metrics.png` is small multiples, one panel per scale of metric, so a headline score of 0.1 is never a flat
line at the bottom of a CIDEr-D axis running to 5: the headline metric first and largest with its no-model
baseline dashed and the best epoch marked, then fractions (accuracies, recalls, mAP), metrics of other scales
(CIDEr-D, pixel errors, ranks) each in a panel of its own order of magnitude, per-label metrics together,
and the losses. Stage openings are vertical lines in every panel. Legends sit outside the data, and the
panel titles are written into the PNG's `Description` text chunk, so a test (or a person with `exiftool`)
reads back what the figure shows.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainers.atomic_files import atomic_path

SKIPPED = ("runtime", "samples_per_second", "steps_per_second", "epoch")
FRACTION_MAX = 1.05  # every value within [0, 1.05]: a fraction, plotted on a 0-1 axis
PER_LABEL = "/"  # `class_accuracy/circle`, `AP/triangle`: one panel for all per-label metrics


def _pyplot():
    """matplotlib on first plot, not at import: only rank 0 plots, at the end (~1 s of imports per process)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_train_loss(log_history: list[dict], path: Path) -> Path | None:
    points = [(e["step"], e["loss"]) for e in log_history if "loss" in e and "step" in e]
    if not points:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(*zip(*points, strict=True), marker=".")
    ax.set(xlabel="optimizer step", ylabel="training loss", title="Training loss")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:  # a disk that fills mid-plot leaves no truncated PNG
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return path


@dataclass
class Panel:
    """One panel of `val_metrics.png`: its title and the series (metric names) drawn in it."""

    title: str
    series: list[str]
    baseline: dict[str, float] = field(default_factory=dict)


def metric_panels(
    series: Mapping[str, Sequence[float | None]],
    headline: str | None,
    baseline: Mapping[str, float] | None = None,
) -> list[Panel]:
    """Group the metrics into panels by scale: headline, fractions, one panel per order of magnitude,
    per-label metrics; the losses are added by the caller."""
    baseline = baseline or {}
    panels: list[Panel] = []
    rest = [k for k in series if k != headline]
    if headline in series:
        panels.append(Panel(f"{headline} (headline)", [headline], _baseline_of([headline], baseline)))
    per_label = [k for k in rest if PER_LABEL in k]
    rest = [k for k in rest if PER_LABEL not in k]
    fractions = [k for k in rest if _is_fraction(series[k])]
    if fractions:
        panels.append(Panel("fractions (0-1)", fractions, _baseline_of(fractions, baseline)))
    by_scale: dict[int, list[str]] = {}
    for key in rest:
        if key not in fractions:
            by_scale.setdefault(_magnitude(series[key]), []).append(key)
    for magnitude in sorted(by_scale):
        keys = by_scale[magnitude]
        panels.append(Panel(f"scale up to 1e{magnitude}", keys, _baseline_of(keys, baseline)))
    if per_label:
        panels.append(Panel("per label", per_label))
    return panels


def _baseline_of(keys: Sequence[str], baseline: Mapping[str, float]) -> dict[str, float]:
    return {k: float(baseline[k]) for k in keys if isinstance(baseline.get(k), int | float)}


def _values(values: Sequence[float | None]) -> list[float]:
    return [float(v) for v in values if isinstance(v, int | float) and math.isfinite(v)]


def _is_fraction(values: Sequence[float | None]) -> bool:
    found = _values(values)
    return bool(found) and min(found) >= 0.0 and max(found) <= FRACTION_MAX


def _magnitude(values: Sequence[float | None]) -> int:
    largest = max((abs(v) for v in _values(values)), default=1.0)
    return math.ceil(math.log10(largest)) if largest > 0 else 0


def plot_eval_metrics(
    metrics_jsonl: Path,
    path: Path,
    headline: str | None = None,
    best_epoch: float | None = None,
    stage_steps: Sequence[int] = (),
    skip: tuple[str, ...] = SKIPPED,
) -> list[Panel] | None:
    """`val_metrics.png` from the run's metrics log; returns the panels drawn (None: nothing to plot).

    `headline`: the metric the best checkpoint follows (eval_ prefix optional); `best_epoch` is marked on
    it; `stage_steps`: the optimizer steps at which unfreezing stages opened (drawn at their epoch)."""
    if not metrics_jsonl.exists():
        return None
    records = [json.loads(line) for line in metrics_jsonl.read_text().splitlines() if line.strip()]
    keys = sorted({k for r in records for k in r["eval"] if not k.endswith(skip) and k != "loss"})
    if not records or not keys:
        return None
    headline = headline.removeprefix("eval_") if headline else None
    epochs = [r["epoch"] for r in records]
    last = records[-1]
    per_step = last["epoch"] / last["step"] if last.get("step") else 0.0
    stage_epochs = [step * per_step for step in stage_steps]
    series = {k: [r["eval"].get(k) for r in records] for k in keys}
    baseline = next((r["baseline"] for r in reversed(records) if r.get("baseline")), None)
    panels = metric_panels(series, headline if headline in series else None, baseline)
    losses = {
        "val loss": [r["eval"].get("loss") for r in records],
        "train loss (epoch mean)": [r.get("train_loss") for r in records],
    }
    panels.append(Panel("loss", list(losses)))
    series.update(losses)

    plt = _pyplot()
    headline_first = bool(panels) and panels[0].title.endswith("(headline)")
    cols = 2
    rows = 1 + math.ceil((len(panels) - (1 if headline_first else 0)) / cols)
    fig = plt.figure(figsize=(13, 3.6 * rows + (1.2 if headline_first else 0)))
    grid = fig.add_gridspec(rows + (1 if headline_first else 0), cols)
    axes_at = []
    start = 0
    if headline_first:
        axes_at.append(fig.add_subplot(grid[0:2, :]))  # first and largest: the full width, two rows
        start = 2
    cells = [(r, c) for r in range(start, rows + (1 if headline_first else 0)) for c in range(cols)]
    for (r, c), _panel in zip(cells, panels[len(axes_at) :], strict=False):
        axes_at.append(fig.add_subplot(grid[r, c]))
    # the ten strong colours first, then the ten light ones: twenty series before a colour repeats
    colours = [*plt.get_cmap("tab10").colors, *plt.get_cmap("tab20").colors[1::2]]
    colour = {name: colours[i % len(colours)] for i, name in enumerate(series)}
    for ax, panel in zip(axes_at, panels, strict=True):
        for name in panel.series:
            width = 2.5 if panel.title.endswith("(headline)") else 1.5
            ax.plot(epochs, series[name], marker="o", color=colour[name], linewidth=width, label=name)
            if name in panel.baseline:
                ax.axhline(panel.baseline[name], linestyle="--", color=colour[name], label=f"{name} baseline")
        if panel.title.endswith("(headline)") and headline and records[0]["epoch"] == 0:
            at_start = records[0]["eval"].get(headline)  # the evaluation before training (eval_on_start)
            if at_start is not None:
                _point(ax, 0, at_start, f"before training: {at_start:.4g}", "s", 10, "white", "black")
        if panel.title.endswith("(headline)") and best_epoch is not None and headline:
            best = next((r["eval"].get(headline) for r in records if r["epoch"] == best_epoch), None)
            ax.axvline(best_epoch, color="black", alpha=0.4)
            if best is not None:
                label = f"best (epoch {best_epoch:g}): {best:.4g}"
                _point(ax, best_epoch, best, label, "*", 16, "gold", "black")
        for opened in stage_epochs:
            ax.axvline(opened, color="grey", linestyle=":", alpha=0.8)
        if panel.title == "fractions (0-1)":
            ax.set_ylim(-0.02, 1.02)
        stages = " (dotted: unfreezing stages opened)" if stage_epochs else ""
        ax.set(xlabel="epoch", title=panel.title + (stages if ax is axes_at[0] else ""))
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, borderaxespad=0)
    fig.tight_layout()
    description = json.dumps([{"title": p.title, "series": p.series, "baseline": p.baseline} for p in panels])
    with atomic_path(path) as tmp:  # a disk that fills mid-plot leaves no truncated PNG
        fig.savefig(tmp, dpi=100, metadata={"Description": description})
    plt.close(fig)
    return panels


def _point(ax: Any, x: float, y: float, label: str, marker: str, size: int, face: str, edge: str) -> None:
    """One marked point of the headline panel (the start, the best), with its own legend entry."""
    ax.plot(
        [x],
        [y],
        marker=marker,
        markersize=size,
        markerfacecolor=face,
        markeredgecolor=edge,
        linestyle="none",
        label=label,
    )


def read_panels(path: Path) -> list[dict]:
    """The panels a `val_metrics.png` shows, read back from its `Description` text chunk."""
    from PIL import Image

    with Image.open(path) as image:
        return json.loads(image.text["Description"])
