"""Model families: how a recipe's `Model(id=..., family=...)` becomes (model, processor).

A family names its real loader (`from_pretrained`), its tiny offline builder (for `--demo` and
tests), its task, and optionally the architecture of known hub ids so that `--dry-run` can count
parameters on the meta device when the weights are not available locally.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from trainers.errors import RecipeError


@dataclass(frozen=True)
class ModelFamily:
    name: str
    task: str
    loader: str  # "module:function" (model_id, dtype) -> (model, processor)
    demo_builder: str  # "module:function" (spec, seed) -> (model, processor)
    architecture: str | None = None  # "module:function" (model_id) -> model on the meta device, or None
    availability: str | None = None  # "module:function" (model_id) -> None, raises ModelNotAvailableError

    def load(self) -> Callable[..., tuple[Any, Any]]:
        return _resolve(self.loader)

    def build_demo(self) -> Callable[..., tuple[Any, Any]]:
        return _resolve(self.demo_builder)

    def meta_model(self, model_id: str) -> Any | None:
        return _resolve(self.architecture)(model_id) if self.architecture else None

    def check_available(self, model_id: str) -> None:
        """Fail now, without loading anything, where the loader would fail in every worker process."""
        if self.availability:
            _resolve(self.availability)(model_id)


FAMILIES: dict[str, ModelFamily] = {
    "blip-captioning": ModelFamily(
        name="blip-captioning",
        task="captioning",
        loader="trainers.models.blip:load_blip_captioning",
        demo_builder="trainers.models.blip:build_tiny_blip",
        architecture="trainers.models.architectures:blip_meta_model",
        availability="trainers.models.blip:check_blip_available",
    ),
}


def get_family(name: str) -> ModelFamily:
    try:
        return FAMILIES[name]
    except KeyError:
        raise RecipeError(
            f"model.family {name!r} is not known; available: {', '.join(sorted(FAMILIES))}."
        ) from None


def _resolve(path: str) -> Callable[..., Any]:
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)
