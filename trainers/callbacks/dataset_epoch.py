"""Tells a training set with per-epoch randomness (seeded augmentation) which epoch is starting.

accelerate's `DataLoaderShard.set_epoch` reaches the sampler, not the dataset, so a dataset that seeds its
augmentation by (seed, epoch, index) hears of the epoch from here. `state.epoch` at an epoch's start is the
number of epochs done (2.0, or 2.5 after a resume mid-epoch): its integer part is the epoch's 0-based index.
"""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback


class DatasetEpoch(TrainerCallback):
    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.dataset.set_epoch(int(state.epoch or 0))
