"""The model-family entry, and the template the Hugging Face families are built from.

A family (BLIP, ViT, DETR, ...) tells the core its real loader and its tiny offline builder, the hub ids whose
architecture it can build on the meta device (so `--dry-run` counts parameters without weights), the classes
a saved run reloads with, its named towers and the tasks it serves. The entry holds plain functions: a family
module imports transformers only inside them, and the registry imports the module only when the family is
asked for, so recipes load without torch.

Towers name parts of a model by parameter-name prefix (`vision` → `vit.`, `head` → `classifier.`): the
plan reports counts per tower, and freeze and param-group presets address a tower instead of a path.

`HFParts` is the template: a family declares its transformers model and processor classes, the files its
processor needs, how task settings become config fields, and the configs of the hub ids it knows; the
template gives the loader, the seeded tiny build and the meta-device model.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from trainers.errors import RecipeError
from trainers.optim.layer_decay import LayerStack, layer_positions, no_layout_error
from trainers.zero3 import param_numel

# `projector` and `language`: a chat VLM's connector and decoder LM (`trainers.models.vlm_chat`)
TOWER_NAMES = ("vision", "projector", "text", "language", "head")
_PEFT_PREFIX = "base_model.model."


def resolve(path: str) -> Any:
    """`"package.module:attr"` → the attribute (imports the module)."""
    module, _, attr = path.partition(":")
    if not module or not attr:
        raise ValueError(f"{path!r} is not a 'module:attr' path")
    return getattr(importlib.import_module(module), attr)


# ------------------------------------------------------------------------------------------- labels


def label_fields(
    num_labels: int | None = None,
    id2label: Mapping[int, str] | None = None,
    label2id: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """Consistent label fields for a config: names default to LABEL_i, the count to the names'."""
    if id2label is None:
        count = num_labels if num_labels is not None else 2
        id2label = {i: f"LABEL_{i}" for i in range(count)}
    id2label = {int(k): str(v) for k, v in id2label.items()}
    if num_labels is not None and num_labels != len(id2label):
        raise ValueError(f"num_labels={num_labels} but id2label has {len(id2label)} entries")
    label2id = dict(label2id) if label2id is not None else {v: k for k, v in id2label.items()}
    return {"num_labels": len(id2label), "id2label": id2label, "label2id": label2id}


def given_label_fields(
    num_labels: int | None = None,
    id2label: Mapping[int, str] | None = None,
    label2id: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """The label fields when the task names labels; none (the config's own) when it does not."""
    if num_labels is None and id2label is None:
        return {}
    return label_fields(num_labels, id2label, label2id)


def no_task_fields() -> dict[str, Any]:
    """For a family whose model takes nothing from the task: any task setting is a TypeError, as before."""
    return {}


# ------------------------------------------------------------------------------------ the HF template


def seeded_build(model_class: Any, config: Any, seed: int, init: Callable[[Any], None] | None = None) -> Any:
    """`model_class(config)` drawn from `seed` (then `init(model)` from the same stream); global RNG untouched."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class(config)
        if init is not None:
            init(model)
    return model


def _transformers_class(name: str) -> Any:
    return getattr(importlib.import_module("transformers"), name)


@dataclass(frozen=True)
class HFParts:
    """What a Hugging Face family declares; the loader, tiny build and meta model follow from it.

    model_class / processor_class: names in `transformers`.
    processor_files: groups of interchangeable file names a local model directory must hold (one of each).
    known_configs: hub id → `(**config_fields) -> config`, for the ids built on the meta device without files.
    task_fields: the task's `model_kwargs` → config fields (labels, or nothing); meta_fields: the same for the
        meta model where it differs (None: task_fields).
    load_kwargs: extra `from_pretrained` arguments of the model; local_config_kwargs: extra arguments when
        the meta model reads a local config (a hub revision, a backbone switch).
    check_id: raises for ids the family refuses (legacy checkpoints) before loading or building them.
    """

    model_class: str
    processor_class: str
    processor_files: tuple[tuple[str, ...], ...]
    known_configs: Mapping[str, Callable[..., Any]] = field(default_factory=dict)
    task_fields: Callable[..., dict[str, Any]] = label_fields
    meta_fields: Callable[..., dict[str, Any]] | None = None
    load_kwargs: Mapping[str, Any] = field(default_factory=dict)
    local_config_kwargs: Mapping[str, Any] = field(default_factory=dict)
    check_id: Callable[[str], None] | None = None

    @property
    def known_ids(self) -> tuple[str, ...]:
        return tuple(self.known_configs)

    def model_cls(self) -> Any:
        return _transformers_class(self.model_class)

    def processor_cls(self) -> Any:
        return _transformers_class(self.processor_class)

    def load(self, model_id: str, options: Any = None, **task_kwargs: Any) -> tuple[Any, Any]:
        """The pretrained model and processor through `trainers.models.hub.load_pretrained` (local dir, cache or
        Hub, offline errors, `LoadOptions`); a head of another size in the checkpoint is replaced."""
        from trainers.models.hub import load_pretrained

        if self.check_id is not None:
            self.check_id(model_id)
        kwargs = {**self.task_fields(**task_kwargs), **self.load_kwargs}
        return load_pretrained(
            model_id,
            self.model_cls(),
            self.processor_cls(),
            options,
            self.processor_files,
            model_kwargs=kwargs or None,
        )

    def build(self, config: Any, seed: int, init: Callable[[Any], None] | None = None) -> Any:
        """The tiny model of `config`, random init from `seed` (see `seeded_build`)."""
        return seeded_build(self.model_cls(), config, seed, init)

    def meta_model(self, model_id: str, **task_kwargs: Any) -> Any | None:
        """The architecture of `model_id` on the meta device: its local config (HF cache or directory) if
        any, else the known id's config; None for an unknown id without a local config."""
        import torch
        from transformers import AutoConfig

        if self.check_id is not None:
            self.check_id(model_id)
        fields = (self.meta_fields or self.task_fields)(**task_kwargs)
        try:
            config = AutoConfig.from_pretrained(
                model_id, local_files_only=True, **self.local_config_kwargs, **fields
            )
        except (OSError, ValueError):
            if model_id not in self.known_configs:
                return None
            config = self.known_configs[model_id](**fields)
        with torch.device("meta"):
            return self.model_cls()(config)


# ------------------------------------------------------------------------------------------ the entry


@dataclass(frozen=True)
class FamilyEntry:
    """One model family.

    loader: `(model_id, options: trainers.models.hub.LoadOptions, **task_kwargs) -> (model, processor)`;
        `task_kwargs` come from the task's `model_kwargs` (e.g. num_labels, id2label, label2id).
    tiny: `(spec, seed=0, **task_kwargs) -> (model, processor)`, random init, offline.
    model_class / processor_class: `() -> class`, what a saved run's `best/` directory reloads with.
    architecture: `(model_id, **task_kwargs) -> model on the meta device, or None` for ids it does not know;
        `known_ids` are the hub ids it builds without any local file.
    towers: tower name → parameter-name prefixes; every parameter belongs to exactly one tower.
    processor_files: groups of interchangeable file names a local model directory must hold for the
        processor (one of each group); empty: the generic loader's default.
    freeze_settings: `(model, recipe) -> list[trainers.freezing.priority.PrioritizedRules]`: freezing
        the family's own settings declare (the dual encoder's `encoder_configs.text.freeze_*`), applied
        through the freeze engine before the recipe's `freeze` rules; None: the family has none.
    tiny_task_kwargs: what a tiny build needs from a task when no task is at hand (a head's label count),
        passed by checks that build every family.
    layers: the towers' layers from input to output (`trainers.optim.layer_decay.LayerStack`), which give
        layer-wise LR decay its layer index; every parameter of a non-head tower must sit in a stack.
        Empty: the family refuses `layer_decay`.
    """

    name: str
    tasks: tuple[str, ...]
    loader: Callable[..., tuple[Any, Any]]
    tiny: Callable[..., tuple[Any, Any]]
    model_class: Callable[[], Any]
    processor_class: Callable[[], Any]
    towers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    architecture: Callable[..., Any] | None = None
    known_ids: tuple[str, ...] = ()
    processor_files: tuple[tuple[str, ...], ...] = ()
    freeze_settings: Callable[[Any, Any], list[Any]] | None = None
    tiny_task_kwargs: Mapping[str, Any] = field(default_factory=dict)
    layers: tuple[LayerStack, ...] = ()

    def __post_init__(self) -> None:
        unknown = sorted(set(self.towers) - set(TOWER_NAMES))
        if unknown:
            raise ValueError(f"family {self.name!r}: towers {unknown} are not among {TOWER_NAMES}")

    def load(self) -> Callable[..., tuple[Any, Any]]:
        return self.loader

    def settings_freeze_rules(self, model: Any, recipe: Any) -> list[Any]:
        """The family's settings as prioritized freeze rules (empty when the family declares none)."""
        return self.freeze_settings(model, recipe) if self.freeze_settings else []

    def build_tiny(self) -> Callable[..., tuple[Any, Any]]:
        return self.tiny

    def meta_model(self, model_id: str, **task_kwargs: Any) -> Any | None:
        """The architecture of `model_id` on the meta device (no memory, no weights), or None if unknown."""
        return self.architecture(model_id, **task_kwargs) if self.architecture else None

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

    # ------------------------------------------------------------------------------------ layer layout

    def check_layer_decay(self, keys: list[str]) -> None:
        """A recipe asking for layer decay (`keys`) of a family without a layer layout is refused."""
        if keys and not self.layers:
            raise no_layout_error(self.name, keys)

    def unplaced_parameters(self, model: Any) -> list[str]:
        """Parameters of a non-head tower that no layer stack places (a layout must leave none)."""
        names = [n.removeprefix(_PEFT_PREFIX) for n, _ in model.named_parameters()]
        placed = layer_positions(self.layers, names)
        return [n for n in names if n not in placed and self.tower_of(n) != "head"]

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


def hf_family(
    name: str, parts: HFParts, tasks: tuple[str, ...], tiny: Callable[..., tuple[Any, Any]], **entry: Any
) -> FamilyEntry:
    """The entry of a family built on `HFParts`: loader, meta model, classes and known ids from the parts
    (`entry` adds the rest and may name a family's own loader or meta model that wraps the parts')."""
    fields: dict[str, Any] = {
        "loader": parts.load,
        "model_class": parts.model_cls,
        "processor_class": parts.processor_cls,
        "architecture": parts.meta_model,
        "known_ids": parts.known_ids,
        "processor_files": parts.processor_files,
    }
    return FamilyEntry(name=name, tasks=tasks, tiny=tiny, **{**fields, **entry})
