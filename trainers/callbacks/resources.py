"""Resources and speed per epoch: training time apart from evaluation time, samples/s, target tokens/s (tasks
whose labels are token sequences), peak memory (`trainers.reporting.memory`: CUDA max allocated, else peak RSS).

Samples and tokens are those of every rank (`RecipeTrainer.get_batch_samples` sums them in the collective it
already makes per step). An epoch's training time runs from its first step to its last, before its evaluation;
evaluation time is the Trainer's `eval_runtime` (loss pass + the task's predict/score, all validation sets).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from transformers import TrainerCallback

from trainers.reporting.memory import peak_memory

logger = logging.getLogger(__name__)


@dataclass
class SeenCounts:
    """Running totals the trainer adds to once per optimizer step (the same on every rank)."""

    samples: int = 0
    tokens: int = 0

    def add(self, samples: int, tokens: int) -> None:
        self.samples += samples
        self.tokens += tokens


@dataclass
class EpochResources:
    epoch: float
    step: int
    train_seconds: float
    eval_seconds: float
    samples: int
    samples_per_second: float
    target_tokens: int | None  # label tokens the loss is taken over (generative tasks), all ranks
    tokens_per_second: float | None
    peak_memory_bytes: int  # this rank's peak so far


@dataclass(eq=False)  # compared and hashed by identity, like any callback
class ResourceUse(TrainerCallback):
    """Measures each epoch; logs a line per epoch, and to W&B on the Trainer's step axis (rank 0)."""

    seen: SeenCounts
    epochs: list[EpochResources] = field(default_factory=list)
    peak_per_rank: list[dict[str, Any]] = field(default_factory=list)
    _started: float = 0.0
    _at_start: tuple[int, int] = (0, 0)
    _train_seconds: float = 0.0
    _pending: dict[str, Any] | None = None

    def on_epoch_begin(self, args, state, control, **kwargs):
        self._started, self._at_start = time.perf_counter(), (self.seen.samples, self.seen.tokens)

    def on_epoch_end(self, args, state, control, **kwargs):
        seconds = time.perf_counter() - self._started
        samples, tokens = self.seen.samples - self._at_start[0], self.seen.tokens - self._at_start[1]
        self._pending = {
            "epoch": round(state.epoch or 0.0, 4),
            "step": state.global_step,
            "train_seconds": seconds,
            "samples": samples,
            "target_tokens": tokens,
        }

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        pending, self._pending = self._pending, None
        if pending is None or pending["step"] != state.global_step:  # an evaluation outside the epoch loop
            return
        self._record(pending, float((metrics or {}).get("eval_runtime", 0.0)), state)

    def on_train_end(self, args, state, control, **kwargs):
        if self._pending is not None:  # the last epoch had no evaluation (a max_steps stop)
            self._record(self._pending, 0.0, state)
            self._pending = None
        mine = asdict(peak_memory())
        try:
            import torch.distributed as dist

            gathered: list[Any] = [None] * dist.get_world_size() if dist.is_initialized() else [mine]
            if dist.is_initialized():
                dist.all_gather_object(gathered, mine)
        except (RuntimeError, ValueError):
            gathered = [mine]
        self.peak_per_rank = gathered

    def _record(self, p: dict[str, Any], eval_seconds: float, state) -> None:
        seconds = max(p["train_seconds"], 1e-9)
        tokens = p["target_tokens"] or None
        record = EpochResources(
            p["epoch"],
            p["step"],
            p["train_seconds"],
            eval_seconds,
            p["samples"],
            p["samples"] / seconds,
            tokens,
            tokens / seconds if tokens else None,
            peak_memory().bytes,
        )
        self.epochs.append(record)
        if not state.is_world_process_zero:
            return
        logger.info(
            "epoch %s: train %.2f s (%.1f samples/s%s), eval %.2f s, peak memory %.1f MiB",
            record.epoch,
            record.train_seconds,
            record.samples_per_second,
            f", {record.tokens_per_second:.0f} tokens/s" if tokens else "",
            eval_seconds,
            record.peak_memory_bytes / 2**20,
        )
        from trainers.reporting.wandb import log

        log(
            {
                f"resources/{k}": v
                for k, v in asdict(record).items()
                if k not in ("epoch", "step") and v is not None
            },
            record.step,
        )

    def summary(self) -> dict[str, Any]:
        """The `resources` section of `training_summary.json`."""
        peak = max(self.peak_per_rank, key=lambda r: r["bytes"]) if self.peak_per_rank else None
        train = sum(e.train_seconds for e in self.epochs)
        samples, tokens = sum(e.samples for e in self.epochs), sum(e.target_tokens or 0 for e in self.epochs)
        return {
            "peak_memory": peak,  # the largest of the ranks
            "peak_memory_per_rank": self.peak_per_rank,
            "train_seconds": train,
            "eval_seconds": sum(e.eval_seconds for e in self.epochs),
            "samples_per_second": samples / train if train else None,
            "tokens_per_second": tokens / train if train and tokens else None,
            "epochs": [asdict(e) for e in self.epochs],
        }
