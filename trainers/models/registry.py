"""Model families: how a recipe's `Model(id=..., family=...)` becomes (model, processor).

One line per family: its name → the `FamilyEntry` in the family's own module (`trainers.models.family`
describes the entry: model and processor classes, loader, tiny builder, meta-device architecture, towers,
the tasks it serves). Entries are resolved on use.
"""

from __future__ import annotations

from trainers.errors import RecipeError
from trainers.models.family import FamilyEntry, resolve

FAMILIES: dict[str, str] = {
    "blip-captioning": "trainers.models.blip:BLIP_CAPTIONING",
    "detr-detection": "trainers.models.detr:DETR_DETECTION",
    "dual-encoder": "trainers.models.dual_encoder:DUAL_ENCODER",
    "vit-classification": "trainers.models.vit:VIT_CLASSIFICATION",
    "florence2": "trainers.models.florence2:FLORENCE2",
    "vitpose-pose": "trainers.models.vitpose:VITPOSE_POSE",
}


def get_family(name: str) -> FamilyEntry:
    try:
        path = FAMILIES[name]
    except KeyError:
        raise RecipeError(
            f"model.family {name!r} is not known; available: {', '.join(sorted(FAMILIES))}."
        ) from None
    entry = resolve(path)
    if not isinstance(entry, FamilyEntry):
        raise TypeError(f"{path} is a {type(entry).__name__}, not a trainers.models.family.FamilyEntry")
    return entry
