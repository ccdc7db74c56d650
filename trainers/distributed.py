"""Rank facts and world checks: make a distributed run prove it is one.

The failure this guards against is silent: on CPU, HF Trainer with DeepSpeed and no `use_cpu` reported
world_size 1 on both ranks of a real 2-rank group, and every rank trained on the whole dataset (16 steps
an epoch where 8 were due), with no error. So a run checks, before and at the start of training, that
the Trainer's world is the process group's world, that DeepSpeed is on when a config was asked for,
and that each rank's dataloader is the shard it should be; any mismatch stops the run on every rank.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch.distributed as dist
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

logger = logging.getLogger(__name__)


class WorldMismatchError(RuntimeError):
    """The Trainer's view of the world differs from the processes that really run (a setup bug)."""


def launcher_world_size() -> int:
    """WORLD_SIZE as set by the launcher (1 when started directly)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def process_group_size() -> int | None:
    """Ranks in the default process group, or None when none is initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return None


def zero_stage(trainer: Any) -> int | None:
    """The ZeRO stage DeepSpeed runs with (None without DeepSpeed)."""
    if not getattr(trainer, "is_deepspeed_enabled", False):
        return None
    plugin = trainer.accelerator.state.deepspeed_plugin
    return int(plugin.deepspeed_config.get("zero_optimization", {}).get("stage", 0))


def zero_offload(trainer: Any) -> bool | None:
    """Whether the ZeRO optimizer keeps its state on the CPU, as the optimizer itself says (None without DeepSpeed)."""
    if not getattr(trainer, "is_deepspeed_enabled", False):
        return None
    optimizer = trainer.model_wrapped.optimizer  # ZeRO-1/2: `cpu_offload`; ZeRO-3: `offload_optimizer`
    return bool(getattr(optimizer, "cpu_offload", getattr(optimizer, "offload_optimizer", False)))


def check_world(trainer: Any, deepspeed_config: str | None = None, fsdp: bool = False) -> None:
    """Fail fast if the Trainer's idea of the world differs from the real one.

    Three views must agree: the launcher's WORLD_SIZE, the process group, and `TrainingArguments`
    (which decides sharding, the main process and DeepSpeed's batch arithmetic).
    """
    launched = launcher_world_size()
    group = process_group_size()
    if "ACCELERATE_USE_CPU" in os.environ and "WORLD_SIZE" not in os.environ:
        logger.warning(
            "accelerate started a single process: `distributed_type: MULTI_CPU` (or --cpu) without mpirun runs "
            "one process whatever num_processes says; for several CPU ranks use `distributed_type: MULTI_GPU` "
            "(--multi_gpu, gloo on CPU) or DEEPSPEED, or `launch.py --launcher accelerate --nproc N`."
        )
    args_world = trainer.args.world_size
    if launched > 1 and group is None:
        raise WorldMismatchError(
            f"WORLD_SIZE={launched} but no process group was initialised: the ranks would train independently. "
            "On CPU, TrainingArguments needs use_cpu=True."
        )
    real = group if group is not None else 1
    if launched != real or args_world != real:
        raise WorldMismatchError(
            f"TrainingArguments.world_size={args_world}, process group {real} ranks, launcher WORLD_SIZE={launched}: "
            "every rank would train on the whole dataset unsharded. On CPU this needs use_cpu=True."
        )
    if deepspeed_config and not trainer.is_deepspeed_enabled:
        raise WorldMismatchError(
            f"DeepSpeed config {deepspeed_config} was requested but the Trainer runs without DeepSpeed "
            "(seen with ACCELERATE_USE_CPU=1 or ddp_backend on CPU): the run would not use ZeRO."
        )
    if trainer.is_deepspeed_enabled and not deepspeed_config:
        raise WorldMismatchError(
            "The Trainer enabled DeepSpeed although no DeepSpeed config was requested (an ACCELERATE_USE_DEEPSPEED "
            "environment variable left behind?): the run would not be the one the recipe describes."
        )
    if fsdp and not getattr(trainer, "is_fsdp_enabled", False):
        raise WorldMismatchError(
            "launch.engine=fsdp was requested but the Trainer runs without FSDP: the model would not be sharded."
        )
    if trainer.is_deepspeed_enabled:
        engine_world = trainer.accelerator.state.num_processes
        if engine_world != real:
            raise WorldMismatchError(f"DeepSpeed sees {engine_world} processes, the process group {real}.")


def expected_batches_per_rank(num_samples: int, batch_size: int, world_size: int) -> int:
    """Batches each rank iterates per epoch: accelerate splits the ceil(N / batch) batches across ranks
    (even_batches: the last ones padded by wrapping around), so every rank gets the same count."""
    return math.ceil(math.ceil(num_samples / batch_size) / world_size)


@dataclass
class RankFacts:
    """What one rank really did; written to `<output_dir>/ranks/rank<N>.json`."""

    rank: int
    local_rank: int
    world_size: int
    deepspeed: bool
    zero_stage: int | None
    zero_offload: bool | None
    fsdp: bool
    train_samples: int
    batch_size: int
    batches_per_epoch: int
    expected_batches_per_epoch: int
    optimizer_steps: int = 0
    group_lrs_at_start: dict[str, float] = field(default_factory=dict)


class WorldGuard(TrainerCallback):
    """At train start, checks this rank's dataloader is its shard; records the facts of the rank."""

    def __init__(self, trainer: Any, deepspeed_config: str | None = None, fsdp: bool = False) -> None:
        self.trainer = trainer
        self.deepspeed_config = deepspeed_config
        self.fsdp = fsdp
        self.facts: RankFacts | None = None

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        check_world(self.trainer, self.deepspeed_config, self.fsdp)
        world = process_group_size() or 1
        dataloader = kwargs["train_dataloader"]
        num_samples = len(self.trainer.train_dataset)
        batches = len(dataloader)
        expected = expected_batches_per_rank(num_samples, args.per_device_train_batch_size, world)
        if batches != expected:
            raise WorldMismatchError(
                f"rank {args.process_index}: {batches} batches per epoch, expected {expected} "
                f"({num_samples} samples / batch {args.per_device_train_batch_size} / {world} ranks): "
                "the training data is not sharded across the ranks."
            )
        optimizer = kwargs.get("optimizer")
        lrs = {}
        if optimizer is not None:
            from trainers.optim.state import base_optimizer

            lrs = {
                g.get("name", str(i)): g["lr"] for i, g in enumerate(base_optimizer(optimizer).param_groups)
            }
        self.facts = RankFacts(
            rank=args.process_index,
            local_rank=args.local_process_index,
            world_size=world,
            deepspeed=bool(self.trainer.is_deepspeed_enabled),
            zero_stage=zero_stage(self.trainer),
            zero_offload=zero_offload(self.trainer),
            fsdp=bool(getattr(self.trainer, "is_fsdp_enabled", False)),
            train_samples=num_samples,
            batch_size=args.per_device_train_batch_size,
            batches_per_epoch=batches,
            expected_batches_per_epoch=expected,
            group_lrs_at_start=lrs,
        )

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if self.facts is not None:
            self.facts.optimizer_steps = state.global_step

    def write(self, output_dir: Path) -> Path | None:
        if self.facts is None:
            return None
        path = Path(output_dir) / "ranks" / f"rank{self.facts.rank}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self.facts), indent=2) + "\n")
        return path


def finish_distributed(barrier: bool = True) -> None:
    """Leave the process group cleanly (without it, an occasional abort at exit was seen here)."""
    if dist.is_available() and dist.is_initialized():
        try:
            if barrier:
                dist.barrier()
        finally:
            dist.destroy_process_group()
