"""The majority-class baseline: what a classifier that ignores the pixels scores.

It answers the most frequent training class for every validation image, scored by the same confusion matrix
as the model. Accuracy then equals that class's share of the validation set; mean class accuracy is one over
the number of classes present.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from trainers.tasks.classification.metrics import confusion_matrix, scores_from_confusion


@dataclass(frozen=True)
class MajorityClassBaseline:
    label: str
    train_count: int  # training images of that class
    train_size: int
    scores: dict[str, float]  # accuracy, mean_class_accuracy

    def to_dict(self) -> dict[str, Any]:
        return {
            "baseline": "majority training class on every image",
            "class": self.label,
            "train_count": self.train_count,
            "train_size": self.train_size,
            **self.scores,
        }

    def render(self) -> str:
        return (
            f"baseline:      majority training class {self.label!r} ({self.train_count} of {self.train_size}) "
            f"on every val image: accuracy={self.scores['accuracy']:.3f}, "
            f"mean_class_accuracy={self.scores['mean_class_accuracy']:.3f}"
        )


def majority_class_baseline(
    train_targets: Sequence[int], val_targets: Sequence[int], classes: Sequence[str]
) -> MajorityClassBaseline:
    """Ties go to the class listed first, as `Counter.most_common` keeps first-seen order among equals."""
    counts = Counter(sorted(train_targets))
    label, count = counts.most_common(1)[0]
    predictions = dict.fromkeys(range(len(val_targets)), label)
    scores = scores_from_confusion(confusion_matrix(predictions, val_targets, len(classes)), classes)
    return MajorityClassBaseline(
        classes[label],
        count,
        len(train_targets),
        {name: scores[name] for name in ("accuracy", "mean_class_accuracy")},
    )
