"""The epoch a training set's per-epoch randomness is drawn for, shared with its DataLoader workers.

Training sets seed their augmentation (and caption draws, curriculum orders) by (seed, epoch, index), and
`trainers.callbacks.dataset_epoch` calls `set_epoch` on the copy in the training process. DataLoader worker
processes hold copies of their own, made when they start; persistent workers (`training.num_workers`, the
default) start once and would keep drawing epoch 0 for the whole run. `EpochAware` keeps the epoch in a
shared-memory integer instead (`multiprocessing.RawValue`): the worker copies read the value the training
process wrote, so an item's pixels depend on (seed, epoch, index) alone, as with `num_workers=0`.

The Trainer calls the callback (`on_epoch_begin`) before it asks the DataLoader for the epoch's first batch,
so no worker fetches an item of the new epoch before the value changes. Stdlib only: recipes import the
datasets' modules without torch.
"""

from __future__ import annotations

import multiprocessing
from multiprocessing.context import get_spawning_popen
from typing import Any


class SharedEpoch:
    """One shared integer. Pickled while a worker process starts (spawn / forkserver), it stays shared;
    pickled anywhere else (a deep copy, a saved object) it becomes a plain copy of its current value."""

    def __init__(self, value: int = 0) -> None:
        self._cell: Any = multiprocessing.RawValue("q", int(value))

    @property
    def value(self) -> int:
        return int(self._cell.value)

    @value.setter
    def value(self, value: int) -> None:
        self._cell.value = int(value)

    def __getstate__(self) -> dict[str, Any]:
        if get_spawning_popen() is not None:  # a worker starting: the same shared memory
            return {"cell": self._cell}
        return {"value": self.value}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._cell = state["cell"] if "cell" in state else multiprocessing.RawValue("q", state["value"])


class EpochAware:
    """A dataset whose `epoch` is a `SharedEpoch` (assigning `self.epoch` in `__init__` creates it)."""

    _shared_epoch: SharedEpoch | None = None

    @property
    def epoch(self) -> int:
        return 0 if self._shared_epoch is None else self._shared_epoch.value

    @epoch.setter
    def epoch(self, value: int) -> None:
        if self._shared_epoch is None:
            self._shared_epoch = SharedEpoch(value)
        else:
            self._shared_epoch.value = value

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose draws the next items get, in this process and in its loader workers."""
        self.epoch = int(epoch)
