"""How many DataLoader worker processes a rank uses (`training.num_workers`), and how they run.

`"auto"` (the default) gives each rank on a GPU a few workers: one fewer than its share of the CPU cores, at
most `AUTO_MAX_WORKERS`, so the main process keeps a core to feed the GPU (16 cores, 1 GPU: 4; 16 cores,
8 GPUs: 1). Without a GPU "auto" means 0: the step itself runs on the same cores, and on the ViT demo here
(2 shared cores) one worker made training slower, not faster (`benchmarks/loader_workers.py`, ratio 0.79).
Workers are persistent (started once per loader, not once per epoch:
image processors and decoders are set up once) and memory is pinned on CUDA only (pinning on CPU only
copies). An integer is taken as it is; 0 loads in the training process, between steps.

Per-epoch draws stay the same with workers: see `trainers.data.epoch`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Literal

AUTO_MAX_WORKERS = 4

NumWorkers = int | Literal["auto"]


@dataclass(frozen=True)
class LoaderSettings:
    num_workers: int
    persistent_workers: bool
    pin_memory: bool


def resolve_num_workers(
    setting: NumWorkers, cuda: bool, cpus: int | None = None, local_world: int | None = None
) -> int:
    """`setting` as a worker count for one rank (`cpus`/`local_world`: this machine's, by default)."""
    if setting != "auto":
        return int(setting)
    if not cuda:
        return 0
    cpus = cpus if cpus is not None else len(os.sched_getaffinity(0))
    local_world = local_world if local_world is not None else int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(0, min(AUTO_MAX_WORKERS, cpus // max(1, local_world) - 1))


def loader_settings(
    setting: NumWorkers, cuda: bool, cpus: int | None = None, local_world: int | None = None
) -> LoaderSettings:
    workers = resolve_num_workers(setting, cuda, cpus, local_world)
    return LoaderSettings(workers, persistent_workers=workers > 0, pin_memory=cuda)


def stop_workers(loaders: list[Any]) -> int:
    """Stops the persistent worker processes of `loaders` (DataLoaders, or None) now; returns how many loaders
    had some. A loader iterated again afterwards starts fresh workers.

    Dropped later with their Trainer instead, the loaders are collected as part of a reference cycle whose
    queues may be closed first: the stop signal never reaches the workers and DataLoader waits out its 5 s
    join timeout for each (20 s for a train and an eval loader of 2 workers, measured on the ViT demo). A
    launch exits without waiting; every run after the first in one process (lora_vs_full, ablations, test
    jobs) paid it."""
    stopped = 0
    for outer in loaders:
        # accelerate's prepared loaders iterate an inner `base_dataloader`, which holds the workers
        loader = getattr(outer, "base_dataloader", outer)
        iterator = getattr(loader, "_iterator", None)
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()
            loader._iterator = None
            stopped += 1
    return stopped
