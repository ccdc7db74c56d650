"""Answer metrics: exact match and token F1 on normalised answers (SQuAD's normalisation: lower case, no
punctuation, no articles, single spaces), ROUGE-L and CIDEr-D from pycocoevalcap; and the most-frequent-answer
baseline, scored by the same functions."""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

BASELINE_PREFIX = "baseline_"
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(predictions: Sequence[str], references: Sequence[str]) -> float:
    return sum(normalize(p) == normalize(r) for p, r in zip(predictions, references, strict=True)) / len(
        references
    )


def _f1(prediction: str, reference: str) -> float:
    p, r = normalize(prediction).split(), normalize(reference).split()
    if not p or not r:
        return float(p == r)
    common = sum((Counter(p) & Counter(r)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(r)
    return 2 * precision * recall / (precision + recall)


def answer_f1(predictions: Sequence[str], references: Sequence[str]) -> float:
    return sum(_f1(p, r) for p, r in zip(predictions, references, strict=True)) / len(references)


def answer_scores(
    metrics: Sequence[str], predictions: Sequence[str], references: Sequence[str], caption_scorer: Any = None
) -> dict[str, float]:
    """The listed metrics of `predictions` against one reference each."""
    out: dict[str, float] = {}
    if "exact_match" in metrics:
        out["exact_match"] = exact_match(predictions, references)
    if "answer_f1" in metrics:
        out["answer_f1"] = answer_f1(predictions, references)
    captions = [m for m in metrics if m in ("rouge_l", "cider_d")]
    if captions:
        scored = caption_scorer.score(
            {i: p for i, p in enumerate(predictions)}, {i: [r] for i, r in enumerate(references)}
        )
        out.update({m: float(scored[m]) for m in captions})
    return {m: out[m] for m in metrics}


@dataclass(frozen=True)
class MostFrequentAnswer:
    """The most frequent training answer given for every validation conversation, and what it scores."""

    answer: str
    train_count: int
    train_size: int
    scores: dict[str, float]

    def metrics(self) -> dict[str, float]:
        return {f"{BASELINE_PREFIX}{k}": v for k, v in self.scores.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "baseline": "most frequent training answer, every validation conversation",
            "answer": self.answer,
            "train_count": self.train_count,
            "train_size": self.train_size,
            **self.scores,
        }

    def render(self) -> str:
        scores = ", ".join(f"{k}={v:.3f}" for k, v in self.scores.items())
        return (
            f"baseline:      most frequent answer {self.answer!r} ({self.train_count} of {self.train_size} "
            f"training answers) on every val conversation: {scores}"
        )


def most_frequent_answer(
    train_answers: Sequence[str],
    references: Sequence[str],
    metrics: Sequence[str],
    caption_scorer: Any = None,
) -> MostFrequentAnswer:
    counts = Counter(train_answers)
    answer, count = max(counts.items(), key=lambda kv: (kv[1], kv[0]))
    scores = answer_scores(metrics, [answer] * len(references), references, caption_scorer)
    return MostFrequentAnswer(answer, count, len(train_answers), scores)
