"""Model families: how a recipe's `Model(id=..., family=...)` becomes (model, processor).

One line per family: its id (the model's name) → the `FamilyEntry` in the family's own module, as one import
path resolved on use, so the registry imports without torch (`trainers.models.family` describes the entry).
Ids renamed to model names keep their old spelling for one release: it resolves with a deprecation line, and
a run's `recipe.json` written under an old id compares as the new one (`current_family_ids`).
"""

from __future__ import annotations

import logging
from typing import Any

from trainers.errors import RecipeError
from trainers.models.family import FamilyEntry, resolve

logger = logging.getLogger(__name__)

FAMILIES: dict[str, str] = {
    "blip": "trainers.models.blip:BLIP_CAPTIONING",
    "detr": "trainers.models.detr:DETR_DETECTION",
    "dual-encoder": "trainers.models.dual_encoder:DUAL_ENCODER",
    "vit": "trainers.models.vit:VIT_CLASSIFICATION",
    "florence2": "trainers.models.florence2:FLORENCE2",
    "vitpose": "trainers.models.vitpose:VITPOSE_POSE",
    "qwen2-vl": "trainers.models.vlm_chat:QWEN2_VL",
    "qwen2.5-vl": "trainers.models.vlm_chat:QWEN2_5_VL",
    "smolvlm": "trainers.models.vlm_chat:SMOLVLM",
    "paligemma": "trainers.models.vlm_chat:PALIGEMMA",
}

# Old id → new id; accepted until the next release.
RENAMED_FAMILIES: dict[str, str] = {
    "blip-captioning": "blip",
    "detr-detection": "detr",
    "vit-classification": "vit",
    "vitpose-pose": "vitpose",
}
_warned: set[str] = set()


def current_family_id(name: str) -> str:
    """The family id `name` stands for now (an old id → its new one, anything else unchanged)."""
    return RENAMED_FAMILIES.get(name, name)


def _deprecated(name: str) -> str:
    new = current_family_id(name)
    if new != name and name not in _warned:
        _warned.add(name)
        logger.warning(
            "model.family %r is deprecated and will stop working in the next release; use %r", name, new
        )
    return new


def get_family(name: str) -> FamilyEntry:
    try:
        path = FAMILIES[_deprecated(name)]
    except KeyError:
        raise RecipeError(
            f"model.family {name!r} is not known; available: {', '.join(sorted(FAMILIES))}."
        ) from None
    entry = resolve(path)
    if not isinstance(entry, FamilyEntry):
        raise TypeError(f"{path} is a {type(entry).__name__}, not a trainers.models.family.FamilyEntry")
    return entry


def current_family_ids(recipe_dict: dict[str, Any]) -> dict[str, Any]:
    """A resolved recipe (`recipe.json`) with an old `model.family` id spelled as its new one, so a run
    written under the old id compares equal to the same recipe now."""
    model = recipe_dict.get("model")
    if not isinstance(model, dict) or model.get("family") not in RENAMED_FAMILIES:
        return recipe_dict
    return {**recipe_dict, "model": {**model, "family": current_family_id(model["family"])}}
