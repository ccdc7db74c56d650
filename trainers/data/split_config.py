"""The recipe fields every task's data class repeats, and the one missing-data check built on them.

A task's data class (`DetectionData`, `PoseData`, ...) subclasses one of three bases, by what its data
supports: `SplitData` (train / val files, their image folder, sample limits), `SplitDataWithPolicy`
(+ `on_bad_sample`), `AugmentableSplitData` (+ a test split and training augmentation). It declares
`data_paths`: which fields hold paths, what each names and whether it is a file or a folder; `missing_paths`
checks them all before any model is loaded. `describing_fields` names the fields that say what the files hold
(a pose skeleton, class names), so a tool that swaps the files of a recipe keeps them. No torch import.

`train` may be a list of sources (`trainers.data.mix_config.MixSource`): the list moves to `train_mix` and
`train` keeps the first source, so everything a task derives from its training split (the label set, a
skeleton, the plan's baseline) comes from the first source; `trainers.data.mixing` builds the mix.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from trainers.data.augment_config import Augment
from trainers.data.mix_config import MixSource, as_mix, check_mix, mix_names
from trainers.data.source_config import DatasetSource

PathKind = Literal["file", "dir", "any"]


@dataclass(frozen=True)
class DataPath:
    """One path field of a data class: `field` (a path, None, a `DatasetSource`, or a dict of them by name),
    what it names in the missing-data message ("COCO JSON") and whether it must be a file, a folder or either."""

    field: str
    what: str
    kind: PathKind = "file"

    def exists(self, path: str) -> bool:
        found = Path(path).expanduser()
        return {"file": found.is_file, "dir": found.is_dir, "any": found.exists}[self.kind]()

    def entries(self, value: Any) -> Iterator[tuple[str, Any]]:
        """(recipe key, value) of the field: one, or one per named entry of a dict (`data.extra_val['coco']`)."""
        if isinstance(value, dict):
            yield from ((f"data.{self.field}[{name!r}]", entry) for name, entry in value.items())
        else:
            yield f"data.{self.field}", value


@dataclass
class SplitData:
    """Train and val files, the folder their image paths are relative to, and how many samples to keep."""

    task: ClassVar[str]  # the task's name: the registry key, the Task's `name`, a family's `tasks=` entry
    eval_config: ClassVar[type]
    data_paths: ClassVar[tuple[DataPath, ...]] = ()
    describing_fields: ClassVar[tuple[str, ...]] = ()
    missing_hint: ClassVar[str] = "Fix the data paths in the recipe."

    train: str
    val: str
    images: str | None = None
    max_train_samples: int | None = None
    max_val_samples: int | None = None
    train_mix: list[MixSource] | None = None  # set from a list given as `train` (see the module docstring)

    def __setattr__(self, name: str, value: Any) -> None:
        """A list given as `train` (constructor, override, assignment) becomes `train_mix`, checked; `train`
        keeps its first source."""
        entries = as_mix(value) if name == "train" else None
        if name == "train" and entries is None and "_ready" in self.__dict__:
            object.__setattr__(self, "train_mix", None)  # one source replaces a mix
        if entries is not None:
            # during __init__ the train_mix default is assigned after train: __post_init__ puts the list back
            object.__setattr__(self, "_mix_given" if "_ready" not in self.__dict__ else "train_mix", entries)
            value = entries[0].source
        object.__setattr__(self, name, value)

    def __post_init__(self) -> None:
        given = self.__dict__.pop("_mix_given", None)
        if given is not None:
            object.__setattr__(self, "train_mix", given)
        object.__setattr__(self, "_ready", True)

    def mix_entries(self) -> list[tuple[str, str, MixSource]]:
        """(recipe key, reporting name, entry) of each source of a mixed training split; [] for one source."""
        if not self.train_mix:
            return []
        names = mix_names(self.train_mix)
        return [(f"data.train[{i}]", names[i], entry) for i, entry in enumerate(self.train_mix)]

    def mix_missing(self) -> list[str]:
        """The missing-data lines of a mix's sources after the first (the first is `train`, checked as usual)."""
        kind = next(
            (p for p in self.data_paths if p.field == "train"), DataPath("train", "training data", "any")
        )
        missing: list[str] = []
        for key, _name, entry in self.mix_entries()[1:]:
            if isinstance(entry.source, DatasetSource):
                problem = entry.source.missing_path(f"{key}.source")
                missing += [problem] if problem is not None else []
            elif not kind.exists(entry.source):
                missing.append(f"{key}.source {entry.source!r} ({kind.what})")
        return missing

    def validate(self) -> None:
        """Raise a RecipeError for settings the data cannot run with (subclasses add their checks)."""
        if self.train_mix:
            check_mix(self.train_mix, "data.train")
        for key, _name, entry in self.mix_entries():
            if isinstance(entry.source, DatasetSource):
                entry.source.validate(f"{key}.source")
        for path in self.data_paths:
            for key, value in path.entries(getattr(self, path.field)):
                if isinstance(value, DatasetSource):
                    value.validate(key)

    def missing_paths(self) -> list[str]:
        """`key 'path' (what)` for each declared data path that does not exist, in declaration order."""
        missing: list[str] = []
        for path in self.data_paths:
            for key, value in path.entries(getattr(self, path.field)):
                if value is None:
                    continue
                if isinstance(value, DatasetSource):
                    problem = value.missing_path(key)
                    missing += [problem] if problem is not None else []
                elif not path.exists(value):
                    missing.append(f"{key} {value!r} ({path.what})")
        return missing

    def missing_message(self, missing: list[str], model_note: str) -> str:
        """The one-paragraph error for `missing` paths (`model_note`: the model is not loaded yet)."""
        return f"Data not found: {'; '.join(missing)}.{model_note} {self.missing_hint}"


@dataclass
class SplitDataWithPolicy(SplitData):
    """+ what a bad sample does: stop the run ("fail") or drop it and count it ("skip"); trainers/data_policy.py."""

    on_bad_sample: Literal["fail", "skip"] = "fail"


@dataclass
class AugmentableSplitData(SplitDataWithPolicy):
    """+ a test split, evaluated once at the end with the best model, and the training split's augmentation."""

    test: str | None = None
    augment: Augment | None = None

    def validate(self) -> None:
        super().validate()
        if self.augment is not None:
            self.augment.validate("data.augment")
