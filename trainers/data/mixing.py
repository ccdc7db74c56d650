"""A training split mixed from several sources, for every task: `MixedDataset` and `build_task_data`.

`build_task_data` calls the task's own `build` once per source (a copy of the recipe whose `data.train` is
that source), so each source is read, checked and augmented exactly as it would be alone; the other splits,
the collators and the task's state (label set, baseline, ...) come from the first source's build, made last.
Every source must give the model the same label set (`Task.model_kwargs`): ids are per label set.

`MixedDataset` draws an epoch's items from the sources. Without weights it concatenates them (the Trainer's
sampler shuffles). With weights it draws, for each of the epoch's `sum(len(source))` positions, a source with
probability weight / sum of weights, and within a source walks a random permutation of its items (a new one
each time it is used up: an up-weighted small source repeats items, a down-weighted large one gives a
fraction of them). The draw depends on (seed, epoch) alone: the same on every rank, for any number of ranks
(the sampler then shards the positions), with or without loader workers (`EpochAware`), and after a resume
(the epoch callback sets the resumed epoch before its first batch).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from trainers.data.epoch import EpochAware
from trainers.errors import RecipeError, UserFacingError


class MixedDataset(EpochAware, Dataset):
    """The items of several datasets, concatenated (no weights) or sampled by weight, per (seed, epoch)."""

    def __init__(
        self,
        datasets: list[Any],
        names: list[str],
        weights: list[float] | None = None,
        seed: int = 0,
    ) -> None:
        if len(datasets) != len(names) or (weights is not None and len(weights) != len(datasets)):
            raise ValueError("one name (and one weight, when weighted) per dataset")
        self.datasets, self.names, self.seed = list(datasets), list(names), int(seed)
        self.sizes = [len(d) for d in self.datasets]
        self.weights = None if weights is None else [float(w) for w in weights]
        self.epoch = 0
        self._plan: tuple[int, np.ndarray, np.ndarray] | None = None  # (epoch, source ids, item ids)

    def __len__(self) -> int:
        return sum(self.sizes)

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        for dataset in self.datasets:  # their own per-epoch draws (augmentation)
            if hasattr(dataset, "set_epoch"):
                dataset.set_epoch(epoch)

    def plan(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(source index, item index within the source) of each position of `epoch`."""
        if self._plan is not None and self._plan[0] == epoch:
            return self._plan[1], self._plan[2]
        if self.weights is None:
            sources = np.repeat(np.arange(len(self.sizes)), self.sizes)
            items = np.concatenate([np.arange(n) for n in self.sizes]) if self.sizes else np.zeros(0, int)
        else:
            rng = np.random.default_rng([self.seed, epoch])
            p = np.asarray(self.weights) / sum(self.weights)
            sources = rng.choice(len(self.sizes), size=len(self), p=p)
            items = np.zeros(len(self), dtype=np.int64)
            for k, size in enumerate(self.sizes):
                where = np.flatnonzero(sources == k)
                if where.size == 0:
                    continue
                cycles = -(-where.size // size)
                order = np.concatenate([rng.permutation(size) for _ in range(cycles)])
                items[where] = order[: where.size]
        self._plan = (epoch, sources, items)
        return sources, items

    def locate(self, index: int) -> tuple[int, int]:
        """(source index, item index) of position `index` in the current epoch."""
        sources, items = self.plan(self.epoch)
        return int(sources[index]), int(items[index])

    def __getitem__(self, index: int) -> Any:
        source, item = self.locate(int(index))
        return self.datasets[source][item]

    def drawn(self, epoch: int) -> dict[str, int]:
        """How many of `epoch`'s positions each source fills (by name)."""
        counts = np.bincount(self.plan(epoch)[0], minlength=len(self.sizes))
        return {name: int(c) for name, c in zip(self.names, counts, strict=True)}

    def report(self, epochs: int) -> dict[str, Any]:
        """The summary's account of the mix: each source's size, weight and samples drawn over `epochs` epochs."""
        epochs = max(1, int(epochs))
        per_epoch = [self.drawn(e) for e in range(epochs)]
        total = sum(p for p in (self.weights or [])) or None
        return {
            "mode": "weighted" if self.weights is not None else "concatenated",
            "seed": self.seed,
            "epochs_counted": epochs,
            "sources": {
                name: {
                    "size": self.sizes[k],
                    "probability": None if total is None else self.weights[k] / total,  # type: ignore[index]
                    "drawn_per_epoch": [p[name] for p in per_epoch],
                    "drawn_total": sum(p[name] for p in per_epoch),
                }
                for k, name in enumerate(self.names)
            },
        }


def single_source(recipe: Any, source: Any) -> Any:
    """A copy of `recipe` whose training split is `source` alone."""
    return dataclasses.replace(recipe, data=dataclasses.replace(recipe.data, train=source, train_mix=None))


def check_mix_labels(task: Any, recipe: Any) -> None:
    """Every source of a mixed training split gives the model the same label set as the first
    (`Task.model_kwargs`: classes, categories): checked when the model is planned, before it loads. A source
    the task cannot read (another task's format) fails here too, named by its key. Skipped while data is
    missing (the missing-data check reports that)."""
    entries = recipe.data.mix_entries() if hasattr(recipe.data, "mix_entries") else []
    if len(entries) < 2 or task.missing_data(recipe):
        return
    labels = task.model_kwargs(single_source(recipe, entries[0][2].source))
    for key, _name, entry in entries[1:]:
        try:
            theirs = task.model_kwargs(single_source(recipe, entry.source))
        except UserFacingError as error:
            raise _named(error, key) from error
        if theirs != labels:
            raise RecipeError(
                f"{key}: this source's labels differ from data.train[0]'s ({_labels(theirs)} vs {_labels(labels)}); "
                "the sources of a mixed split share one label set, in the same order. Make the files name the "
                "same classes/categories, or convert this source first."
            )


def build_task_data(task: Any, recipe: Any, processor: Any) -> Any:
    """`task.build(recipe, processor)`, with a mixed training split (`data.train_mix`) built source by source."""
    entries = recipe.data.mix_entries() if hasattr(recipe.data, "mix_entries") else []
    if not entries:
        return task.build(recipe, processor)
    check_mix_labels(task, recipe)
    trains: dict[int, Any] = {}
    for i, (key, _name, entry) in reversed(list(enumerate(entries))):  # the first last: its state stays
        try:
            built = task.build(single_source(recipe, entry.source), processor)
        except UserFacingError as error:
            raise _named(error, key) from error
        trains[i] = built.train
        if i == 0:
            result = built
    weights = [e.weight for _k, _n, e in entries]
    result.train = MixedDataset(
        [trains[i] for i in range(len(entries))],
        [name for _k, name, _e in entries],
        None if weights[0] is None else [float(w) for w in weights],  # type: ignore[arg-type]
        seed=recipe.training.seed,
    )
    return result


def _named(error: UserFacingError, key: str) -> UserFacingError:
    """The error again, opening with the source's key: the task's reader names `data.train` for every source."""
    message = f"{key} (a source of the mixed training split): {error}"
    try:
        return type(error)(message)
    except TypeError:  # an error class with other constructor arguments
        return RecipeError(message)


def _labels(kwargs: dict[str, Any]) -> str:
    names = kwargs.get("id2label")
    return ", ".join(map(str, names.values())) if isinstance(names, dict) else repr(kwargs)
