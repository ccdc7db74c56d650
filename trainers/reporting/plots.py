"""PNG plots of a finished run: training loss per logging step, validation metrics per epoch."""

from __future__ import annotations

import json
from pathlib import Path

from trainers.atomic_files import atomic_path


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


def plot_eval_metrics(
    metrics_jsonl: Path,
    path: Path,
    skip: tuple[str, ...] = ("runtime", "samples_per_second", "steps_per_second", "epoch"),
) -> Path | None:
    if not metrics_jsonl.exists():
        return None
    records = [json.loads(line) for line in metrics_jsonl.read_text().splitlines() if line.strip()]
    keys = sorted({k for r in records for k in r["eval"] if not k.endswith(skip) and k != "loss"})
    if not records or not keys:
        return None
    plt = _pyplot()
    fig, (ax_m, ax_l) = plt.subplots(1, 2, figsize=(11, 4))
    epochs = [r["epoch"] for r in records]
    for key in keys:
        ax_m.plot(epochs, [r["eval"].get(key) for r in records], marker="o", label=key)
    ax_m.set(xlabel="epoch", ylabel="score", title="Validation metrics")
    ax_m.legend()
    ax_m.grid(alpha=0.3)
    ax_l.plot(epochs, [r["eval"].get("loss") for r in records], marker="o", label="val loss")
    ax_l.plot(epochs, [r.get("train_loss") for r in records], marker="o", label="train loss (epoch mean)")
    ax_l.set(xlabel="epoch", ylabel="loss", title="Loss")
    ax_l.legend()
    ax_l.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:  # a disk that fills mid-plot leaves no truncated PNG
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return path
