"""Classification metrics from one confusion matrix (torchmetrics): accuracy, per-class accuracy, the plot.

Per-class accuracy (recall) is reported only for classes present in the evaluated set: a class with no
samples has no accuracy, and a 0 there would drag `mean_class_accuracy` down for nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from trainers.tasks.classification.config import CLASS_PREFIX


def confusion_matrix(
    predictions: Mapping[int, int], targets: Sequence[int], num_classes: int
) -> torch.Tensor:
    """`cm[true, predicted]` counts over the indices in `predictions` (torchmetrics, imported on first use:
    it costs seconds, and recipe checks that only read the task's metric names should not pay them)."""
    from torchmetrics.functional.classification import multiclass_confusion_matrix

    indices = sorted(predictions)
    preds = torch.tensor([int(predictions[i]) for i in indices], dtype=torch.long)
    truth = torch.tensor([int(targets[i]) for i in indices], dtype=torch.long)
    return multiclass_confusion_matrix(preds, truth, num_classes=num_classes)


def scores_from_confusion(cm: torch.Tensor, classes: Sequence[str]) -> dict[str, float]:
    """accuracy, mean_class_accuracy (over classes present) and `class_accuracy/<name>` per present class."""
    support = cm.sum(dim=1)
    total = int(support.sum())
    if total == 0:
        raise ValueError("no predictions to score")
    correct = cm.diag()
    out = {"accuracy": float(correct.sum()) / total}
    per_class = {
        name: float(correct[i]) / int(support[i]) for i, name in enumerate(classes) if support[i] > 0
    }
    out["mean_class_accuracy"] = sum(per_class.values()) / len(per_class)
    out.update({f"{CLASS_PREFIX}{name}": value for name, value in per_class.items()})
    return out


def plot_confusion_matrix(cm: torch.Tensor, classes: Sequence[str], path: Path, title: str = "") -> Path:
    """A PNG of the counts (rows: true class, columns: predicted), each cell labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(classes)
    size = max(3.0, 0.6 * n + 1.5)
    fig, ax = plt.subplots(figsize=(size, size))
    try:
        counts = cm.numpy()
        ax.imshow(counts, cmap="Blues")
        ax.set_xticks(range(n), labels=list(classes), rotation=45, ha="right")
        ax.set_yticks(range(n), labels=list(classes))
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        if title:
            ax.set_title(title)
        threshold = counts.max() / 2 if counts.size else 0
        for i in range(n):
            for j in range(n):
                ax.text(
                    j,
                    i,
                    str(int(counts[i, j])),
                    ha="center",
                    va="center",
                    color="white" if counts[i, j] > threshold else "black",
                )
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
    return path
