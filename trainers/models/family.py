"""The model-family entry: what one registration line tells the core about a family of models.

A family (BLIP captioning, ViT classification, DETR, ...) names its model and processor classes, its real
loader and its tiny offline builder, the hub ids whose architecture it can build on the meta device (so
`--dry-run` counts parameters without weights), its named towers and the tasks it serves. Everything is a
`"module:attr"` string resolved on use, so the registry stays importable without torch.

Towers name parts of a model by parameter-name prefix (`vision` → `vit.`, `head` → `classifier.`): the
plan reports counts per tower, and freeze and param-group presets address a tower instead of a path.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from trainers.errors import RecipeError
from trainers.zero3 import param_numel

TOWER_NAMES = ("vision", "text", "head")
_PEFT_PREFIX = "base_model.model."


def resolve(path: str) -> Any:
    """`"package.module:attr"` → the attribute (imports the module)."""
    module, _, attr = path.partition(":")
    if not module or not attr:
        raise ValueError(f"{path!r} is not a 'module:attr' path")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class FamilyEntry:
    """One model family.

    loader: `(model_id, options: trainers.models.hub.LoadOptions, **task_kwargs) -> (model, processor)`;
        `task_kwargs` come from the task's `model_kwargs` (e.g. num_labels, id2label, label2id).
    tiny: `(spec, seed=0, **task_kwargs) -> (model, processor)`, random init, offline.
    architecture: `(model_id, **task_kwargs) -> model on the meta device, or None` for ids it does not know;
        `known_ids` are the hub ids it builds without any local file.
    towers: tower name → parameter-name prefixes; every parameter belongs to exactly one tower.
    processor_files: groups of interchangeable file names a local model directory must hold for the
        processor (one of each group); empty: the generic loader's default.
    freeze_settings: `(model, recipe) -> list[trainers.freezing.priority.PrioritizedRules]`: freezing
        the family's own settings declare (the dual encoder's `encoder_configs.text.freeze_*`), applied
        through the freeze engine before the recipe's `freeze` rules; None: the family has none.
    """

    name: str
    model_class: str
    processor_class: str
    loader: str
    tiny: str
    tasks: tuple[str, ...]
    towers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    architecture: str | None = None
    known_ids: tuple[str, ...] = ()
    processor_files: tuple[tuple[str, ...], ...] = ()
    freeze_settings: str | None = None

    def __post_init__(self) -> None:
        unknown = sorted(set(self.towers) - set(TOWER_NAMES))
        if unknown:
            raise ValueError(f"family {self.name!r}: towers {unknown} are not among {TOWER_NAMES}")

    def load(self) -> Callable[..., tuple[Any, Any]]:
        return resolve(self.loader)

    def settings_freeze_rules(self, model: Any, recipe: Any) -> list[Any]:
        """The family's settings as prioritized freeze rules (empty when the family declares none)."""
        return resolve(self.freeze_settings)(model, recipe) if self.freeze_settings else []

    def build_tiny(self) -> Callable[..., tuple[Any, Any]]:
        return resolve(self.tiny)

    def meta_model(self, model_id: str, **task_kwargs: Any) -> Any | None:
        """The architecture of `model_id` on the meta device (no memory, no weights), or None if unknown."""
        return resolve(self.architecture)(model_id, **task_kwargs) if self.architecture else None

    def check_available(self, model_id: str, revision: str | None = None) -> None:
        """Fail now, without loading anything, where the loader would fail in every worker process."""
        from trainers.models import hub

        hub.check_available(model_id, self.processor_files or hub.PROCESSOR_FILES, revision)

    # ------------------------------------------------------------------------------------------ tasks

    def serves(self, task: str) -> bool:
        return task in self.tasks

    def check_serves(self, task: str, where: str = "model.family") -> None:
        """A recipe whose data needs a task this family cannot do is a recipe error, named by its key."""
        if not self.serves(task):
            raise RecipeError(
                f"{where}: family {self.name!r} serves the {', '.join(self.tasks)} task(s), but the recipe's "
                f"data is for the {task} task. Pick a family that serves {task}, or data for "
                f"{' / '.join(self.tasks)}."
            )

    # ----------------------------------------------------------------------------------------- towers

    def tower_of(self, param_name: str) -> str | None:
        """The tower a parameter belongs to (names inside a peft wrapper are accepted too)."""
        name = param_name.removeprefix(_PEFT_PREFIX)
        for tower, prefixes in self.towers.items():
            if name.startswith(prefixes):
                return tower
        return None

    def tower_regex(self, tower: str) -> str:
        """A `ParamGroup(match=...)` / `Freeze(regex=...)` pattern selecting one tower's parameters."""
        try:
            prefixes = self.towers[tower]
        except KeyError:
            raise RecipeError(
                f"family {self.name!r} has no {tower!r} tower; its towers: {', '.join(self.towers) or 'none'}."
            ) from None
        return "^(?:" + "|".join(re.escape(p) for p in prefixes) + ")"

    def tower_counts(self, model: Any) -> dict[str, int]:
        """Unique parameters per tower (a tied tensor counts once); parameters in no tower fail loudly.

        Works on the meta device, so `--dry-run` can report towers of a model it has no weights for.
        """
        counts = dict.fromkeys(self.towers, 0)
        outside: list[str] = []
        for name, param in model.named_parameters():
            tower = self.tower_of(name)
            if tower is None:
                outside.append(name)
            else:
                counts[tower] += param_numel(param)
        if outside:
            raise ValueError(
                f"family {self.name!r}: {len(outside)} parameters belong to no tower (first: {outside[:3]}); "
                "extend its towers"
            )
        return counts
