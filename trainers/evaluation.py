"""One sharded evaluator for every task: rank shard → `task.predict` → gather → `task.score` on rank 0 → broadcast.

Each rank predicts for a strided shard of the evaluation set (`rank, rank + world, ...`). Shards differ in
length by at most one; the shorter ones are padded with a repeated index so that every rank runs the same
number of batches of the same size. That is what ZeRO-3 needs: each forward (and each `generate` step with
`synced_gpus=True`) gathers parameters collectively, so a rank that stopped early would hang the others.
The padded items' predictions are dropped before gathering, so each index is scored exactly once. Rank 0
scores the gathered predictions and broadcasts the metrics: every rank takes the same early-stopping
decision. An exception while checking or scoring is broadcast too, so the other ranks fail instead of waiting forever.

`ShardedEvaluator(trainer)` is the callable `RecipeTrainer.evaluation_loop` merges into the Trainer's metrics.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from trainers.tasks.interface import Task
from trainers.zero3 import synced_generation  # noqa: F401  (its old home; tasks import it from zero3)

logger = logging.getLogger(__name__)

_SCORE_FAILED = "__score_failed__"
DISTINCT_PREDICTIONS = "distinct_predictions"
# the tasks that count them under their own name (captioning: the same name; chat: its answers)
DISTINCT_NAMES = (DISTINCT_PREDICTIONS, "distinct_answers")


@contextmanager
def untouched_random_state() -> Iterator[None]:
    """Python's, NumPy's and torch's random states (CPU and every CUDA device) put back as they were on entry."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def distinct_predictions(predictions: Mapping[int, Any]) -> int:
    """How many different outputs the model gave over the set, compared exactly (tensors by their bytes): 1 means
    the output did not depend on the image, whatever it scores (`trainers.reporting.summary.baseline_report`)."""
    return len({_fingerprint(p) for p in predictions.values()})


def _fingerprint(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if hasattr(value, "tobytes") and hasattr(value, "shape"):  # numpy arrays and scalars
        return (str(value.dtype), tuple(value.shape), value.tobytes())
    if isinstance(value, Mapping):
        return tuple(sorted(((str(k), _fingerprint(v)) for k, v in value.items()), key=lambda kv: kv[0]))
    if isinstance(value, list | tuple):
        return tuple(_fingerprint(v) for v in value)
    try:
        hash(value)
    except TypeError:
        return repr(value)
    return value


@dataclass(frozen=True)
class Shard:
    """The indices one rank evaluates: the first `real` are its own, the rest repeat one as padding."""

    indices: list[int]
    real: int


def shard(n: int, rank: int, world: int) -> Shard:
    """Strided shard of range(n) for `rank`, padded to ceil(n / world) items (every rank the same length)."""
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in a world of {world}")
    per_rank = -(-n // world)
    own = list(range(rank, n, world))
    filler = own[-1] if own else 0  # a rank with no sample of its own still runs the padded batches
    return Shard(own + [filler] * (per_rank - len(own)), len(own))


def _float_dtype(model: nn.Module) -> torch.dtype | None:
    return next((p.dtype for p in model.parameters() if p.dtype.is_floating_point), None)


def _to_device(
    batch: Mapping[str, Any], device: torch.device | str, dtype: torch.dtype | None
) -> dict[str, Any]:
    """Tensors onto the model's device; floating tensors (pixel values) in the model's dtype (bf16 runs)."""
    out: dict[str, Any] = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            cast = dtype if dtype is not None and value.is_floating_point() else None
            value = value.to(device=device, dtype=cast)
        out[key] = value
    return out


def _cpu(prediction: Any) -> Any:
    return prediction.detach().cpu() if isinstance(prediction, torch.Tensor) else prediction


class ShardedEvaluator:
    """Evaluates one dataset with one task on every rank; returns the same `{prefix + metric: value}` on all.

    `prefix` names an extra validation set ("coco_") or the test split ("test_"); `artifacts_dir`, when
    set, receives the task's files for the latest evaluation (rank 0). `last_predictions` (rank 0) holds
    the latest `{index: prediction}`; `forward_batches` counts the `predict` calls of the latest run.
    """

    def __init__(
        self,
        task: Task,
        dataset: Dataset,
        collator: Callable[[list[dict[str, Any]]], dict[str, Any]],
        batch_size: int,
        prefix: str = "",
        artifacts_dir: Path | None = None,
        num_workers: int = 0,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.task = task
        self.dataset = dataset
        self.collator = collator
        self.batch_size = batch_size
        self.prefix = prefix
        self.artifacts_dir = Path(artifacts_dir) if artifacts_dir is not None else None
        self.num_workers = num_workers
        self.last_predictions: dict[int, Any] = {}
        self.forward_batches = 0

    # ------------------------------------------------------------------------------------------ steps

    @torch.no_grad()
    def predict_shard(
        self, model: nn.Module, rank: int, world: int, device: torch.device | str
    ) -> list[tuple[int, Any]]:
        """(index, prediction) for this rank's own samples; padded batches run too, their outputs dropped."""
        part = shard(len(self.dataset), rank, world)
        loader = DataLoader(
            Subset(self.dataset, part.indices),
            batch_size=self.batch_size,
            shuffle=False,
            collate_fn=self.collator,
            num_workers=self.num_workers,
            # its own generator: a DataLoader draws a base seed per iterator, which would otherwise advance the
            # global torch RNG, so an evaluation would change the training that follows it
            generator=torch.Generator().manual_seed(0),
        )
        was_training = model.training
        model.eval()
        dtype = _float_dtype(model)
        pairs: list[tuple[int, Any]] = []
        self.forward_batches = 0
        from tqdm.auto import tqdm

        from trainers.reporting.progress import progress_enabled

        bar = tqdm(
            total=len(part.indices),
            desc=f"evaluating {self.prefix.rstrip('_') or 'val'}",
            unit="sample",
            leave=False,
            disable=not progress_enabled(rank),
        )
        try:
            for start, batch in zip(range(0, len(part.indices), self.batch_size), loader, strict=True):
                chunk = part.indices[start : start + self.batch_size]
                predictions = list(self.task.predict(model, _to_device(batch, device, dtype)))
                self.forward_batches += 1
                if len(predictions) != len(chunk):
                    raise RuntimeError(
                        f"{type(self.task).__name__}.predict returned {len(predictions)} predictions "
                        f"for a batch of {len(chunk)}"
                    )
                real = max(0, min(len(chunk), part.real - start))  # padding sits at the end of the shard
                pairs.extend((i, _cpu(p)) for i, p in zip(chunk[:real], predictions[:real], strict=True))
                bar.update(len(chunk))
        finally:
            bar.close()
            if was_training:
                model.train()
        return pairs

    def gather(self, pairs: list[tuple[int, Any]], rank: int, world: int) -> list[tuple[int, Any]] | None:
        """All ranks' pairs, concatenated on rank 0 (None on the other ranks)."""
        if world == 1:
            return pairs
        if not dist.is_initialized():
            raise RuntimeError(f"evaluation on {world} ranks needs an initialised torch.distributed group")
        parts: list[list[tuple[int, Any]]] | None = [[] for _ in range(world)] if rank == 0 else None
        dist.gather_object(pairs, parts, dst=0)
        return [pair for part in parts or [] for pair in part] if rank == 0 else None

    def complete(self, pairs: list[tuple[int, Any]]) -> dict[int, Any]:
        """`{index: prediction}` in index order, checked to hold every index of the set exactly once."""
        predictions = dict(pairs)
        n = len(self.dataset)
        if len(pairs) != n or sorted(predictions) != list(range(n)):
            raise RuntimeError(
                f"evaluation gathered {len(pairs)} predictions for {len(predictions)} distinct indices of a "
                f"set of {n}; every index must be predicted exactly once"
            )
        return dict(sorted(predictions.items()))

    def score(self, pairs: list[tuple[int, Any]] | None, rank: int, world: int) -> dict[str, float]:
        """Rank 0 checks and scores; the metrics (or the failure) are broadcast so every rank returns the same.

        The predictions travel with the metrics, so `last_predictions` is the same on every rank (what a
        checkpoint saves with the evaluation, whichever rank writes it).
        """
        box: list[Any] = [None, None]
        if rank == 0:
            try:
                predictions = self.complete(pairs or [])
                self.last_predictions = predictions
                scores = dict(self.task.score(predictions, self.dataset))
                if not any(name in scores for name in DISTINCT_NAMES):  # every task's, for the baseline rule
                    scores[DISTINCT_PREDICTIONS] = distinct_predictions(predictions)
                metrics = {f"{self.prefix}{k}": float(v) for k, v in scores.items()}
                if self.artifacts_dir is not None:
                    self.task.save_artifacts(predictions, self.dataset, self.artifacts_dir)
                box = [metrics, predictions]
            except Exception as error:
                if world > 1:
                    box = [{_SCORE_FAILED: f"{type(error).__name__}: {error}"}, None]
                    dist.broadcast_object_list(box, src=0)
                raise
        if world > 1:
            dist.broadcast_object_list(box, src=0)
        if _SCORE_FAILED in box[0]:
            raise RuntimeError(f"scoring on rank 0 failed: {box[0][_SCORE_FAILED]}")
        self.last_predictions = box[1]
        return box[0]

    # ---------------------------------------------------------------------------------------- entries

    def run(
        self, model: nn.Module, rank: int = 0, world: int = 1, device: torch.device | str = "cpu"
    ) -> dict[str, float]:
        """The whole evaluation; call it on every rank of the group."""
        return self.score(
            self.gather(self.predict_shard(model, rank, world, device), rank, world), rank, world
        )

    def __call__(self, trainer: Any) -> dict[str, float]:
        """For a transformers Trainer: its unwrapped model (DDP / DeepSpeed engine removed), rank, device."""
        args = trainer.args
        model = trainer.accelerator.unwrap_model(trainer.model)
        return self.run(model, args.process_index, args.world_size, args.device)

    def examples(self, n: int = 10) -> list[dict[str, Any]]:
        return self.task.examples(self.last_predictions, self.dataset, n)

    def close(self) -> None:
        self.task.close()


def evaluate_all(evaluators: Sequence[ShardedEvaluator], trainer: Any) -> dict[str, float]:
    """Several sets (the target val set and extra ones, each with its own prefix) as one metrics dict."""
    metrics: dict[str, float] = {}
    for evaluator in evaluators:
        metrics.update(evaluator(trainer))
    return metrics
