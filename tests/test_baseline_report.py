"""A model whose output ignores the image never "beats the baseline", whatever its score."""

from __future__ import annotations

from dataclasses import dataclass

from trainers.reporting.summary import baseline_report


@dataclass
class _Baseline:
    value: float

    def to_dict(self):
        return {"val_score": self.value}


def test_one_caption_for_every_image_does_not_beat_the_baseline_even_when_it_scores_higher():
    """The BLIP LoRA demo's case: 0.841 with one distinct caption against a weaker constant-caption baseline."""
    report = baseline_report(_Baseline(0.702), {"val_score": 0.841, "distinct_predictions": 1}, "val_score")
    assert (
        report["beats_baseline"] is False and "one prediction for every validation image" in report["why_not"]
    )


def test_image_dependent_predictions_beat_the_baseline_on_their_score():
    beats = baseline_report(_Baseline(0.9), {"val_score": 1.43, "distinct_predictions": 33}, "val_score")
    loses = baseline_report(_Baseline(0.9), {"val_score": 0.8, "distinct_predictions": 33}, "val_score")
    unknown = baseline_report(_Baseline(0.9), {"val_score": 1.43}, "val_score")  # a task that counts none
    assert (beats["beats_baseline"], loses["beats_baseline"], unknown["beats_baseline"]) == (
        True,
        False,
        True,
    )
    assert "why_not" not in beats
