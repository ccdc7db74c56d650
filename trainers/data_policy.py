"""What a dataset does with a bad sample: stop the run, or skip it and count it.

Every task's dataset takes the recipe's `on_bad_sample` ("fail" | "skip") and routes each problem it
finds through one `BadSamples` collector: with "fail" the first problem raises a `DataError` naming
the file (and line, for line-based formats), what is wrong and what to do; with "skip" the sample is
dropped and recorded. `training_summary.json` reports the counts per split and reason and the first
few examples, so a skipped sample is never silent. Later tasks (detection boxes outside the image,
keypoints, XML annotations) call `BadSamples.report(...)` the same way.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from trainers.errors import RecipeError, UserFacingError

logger = logging.getLogger(__name__)

Policy = Literal["fail", "skip"]
POLICIES = ("fail", "skip")
_MAX_EXAMPLES = 20


class DataError(UserFacingError, ValueError):
    """Training or validation data is missing or malformed; the message names the file, the problem and the fix."""

    def __init__(self, message: str = "", *args: object) -> None:
        # Raised in a DataLoader worker, torch re-raises `DataError("Caught DataError in DataLoader worker
        # process 0.\nOriginal Traceback ...\n...DataError: <message>")`: keep the user's paragraph only.
        marker = "DataError: "
        if isinstance(message, str) and message.startswith("Caught DataError") and marker in message:
            message = message[message.rindex(marker) + len(marker) :].strip()
        super().__init__(message, *args)


@dataclass
class BadSamples:
    """Collects (or raises on) bad samples of one data source under one policy."""

    source: str
    policy: Policy = "fail"
    reasons: Counter = field(default_factory=Counter)
    examples: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise RecipeError(f"on_bad_sample must be one of {', '.join(POLICIES)}, got {self.policy!r}.")

    def report(self, reason: str, where: str, message: str, fix: str) -> None:
        """One bad sample: raise under "fail", else record it. `where` is file[:line] or the sample's name."""
        if self.policy == "fail":
            raise DataError(
                f'{where}: {message}. {fix}; or set the recipe\'s data on_bad_sample="skip" to drop such '
                "samples and count them in training_summary.json."
            )
        self.reasons[reason] += 1
        if len(self.examples) < _MAX_EXAMPLES:
            self.examples.append({"where": where, "reason": reason, "message": message})

    @property
    def skipped(self) -> int:
        return sum(self.reasons.values())

    def summary(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "policy": self.policy,
            "skipped": self.skipped,
            "by_reason": dict(sorted(self.reasons.items())),
            "examples": list(self.examples),
        }

    def log(self, kept: int) -> None:
        if self.skipped:
            logger.warning(
                "%s: skipped %d bad sample(s) (%s), kept %d (on_bad_sample=skip; details in training_summary.json)",
                self.source,
                self.skipped,
                ", ".join(f"{k}: {v}" for k, v in sorted(self.reasons.items())),
                kept,
            )


def ensure_not_empty(kept: int, bad: BadSamples, what: str) -> None:
    if kept == 0 and not bad.skipped:
        raise DataError(
            f"{bad.source}: no {what} to use (the file holds none, or none this task can use). Add at least "
            "one, or point the recipe at the right file."
        )
    if kept == 0:
        raise DataError(
            f"{bad.source}: no usable {what} left ({bad.skipped} skipped: "
            f"{', '.join(f'{k}: {v}' for k, v in sorted(bad.reasons.items())) or 'none found'}). "
            "Fix the data or point the recipe at the right file."
        )


def data_report(*datasets: tuple[str, Any]) -> dict[str, Any]:
    """`{split: BadSamples.summary()}` for the summary, for every dataset that has a `bad_samples` collector."""
    out: dict[str, Any] = {}
    for split, dataset in datasets:
        base = getattr(dataset, "dataset", dataset)  # torch Subset
        bad = getattr(base, "bad_samples", None)
        if isinstance(bad, BadSamples):
            out[split] = {"size": len(dataset), **bad.summary()}
    return out


def check_train_size(
    num_samples: int, per_device_batch: int, grad_accum: int, world_size: int, source: str
) -> None:
    """A training set smaller than one global batch cannot make a single full optimizer step."""
    global_batch = per_device_batch * grad_accum * world_size
    if num_samples < global_batch:
        raise RecipeError(
            f"{source}: the training set has {num_samples} sample(s), fewer than one global batch of {global_batch} "
            f"(training.batch_size={per_device_batch} x training.grad_accum={grad_accum} x {world_size} process(es)). "
            "Lower training.batch_size / training.grad_accum, or add data (check data.max_train_samples)."
        )
