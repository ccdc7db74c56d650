"""The dual encoder's `encoder_configs.*.freeze_*` settings as prioritized rules of the freeze engine.

Text tower, highest priority first (the seed's order): `freeze_pattern` (regex searched in the text tower's
parameter names, or `all`) > `freeze_layers` (embeddings + the first N layers, -1 = all) > `freeze_backbone`.
The projections and the temperature are protected: an `Unfreeze` runs after whatever rule won.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from trainers.errors import RecipeError
from trainers.freezing.priority import PrioritizedRules, RuleOption
from trainers.recipe.config import Freeze, Unfreeze
from trainers.recipe.overrides import setting_source

TEXT = "text_model"
VISION = "vision_model"
TEXT_PROJECTION = (Unfreeze("text_projection"),)  # never frozen, whatever rule won
VISUAL_PROJECTION = (Unfreeze("visual_projection"),)


def _option(recipe: Any, key: str, value: Any, rules: tuple[Freeze, ...]) -> RuleOption:
    return RuleOption(key, value, rules, setting_source(recipe, key))


def text_rules(model: nn.Module, recipe: Any) -> PrioritizedRules:
    text = recipe.encoder_configs.text
    base = "encoder_configs.text"
    pattern = layers = backbone = None
    if text.freeze_pattern is not None:
        rule = (
            Freeze(TEXT) if text.freeze_pattern == "all" else Freeze(regex=text.freeze_pattern, within=TEXT)
        )
        pattern = _option(recipe, f"{base}.freeze_pattern", text.freeze_pattern, (rule,))
    if text.freeze_layers is not None:
        count = len(model.text_model.encoder.layer)
        key = f"{base}.freeze_layers"
        if text.freeze_layers > count:
            where = setting_source(recipe, key)
            raise RecipeError(
                f"{where + ': ' if where else ''}{key}={text.freeze_layers}: the text tower "
                f"({recipe.encoder_configs.text.model_name}) has {count} layers; use 0..{count} (the embeddings plus "
                f"that many layers) or -1 (the whole tower)."
            )
        if text.freeze_layers == -1:
            rules: tuple[Freeze, ...] = (Freeze(TEXT),)
        else:
            rules = (Freeze(f"{TEXT}.embeddings"),)
            if text.freeze_layers > 0:
                rules += (Freeze(f"{TEXT}.encoder.layer[:{text.freeze_layers}]"),)
        layers = _option(recipe, key, text.freeze_layers, rules)
    if text.freeze_backbone:
        backbone = _option(recipe, f"{base}.freeze_backbone", True, (Freeze(TEXT),))
    return PrioritizedRules("text tower", (pattern, layers, backbone), TEXT_PROJECTION)


def vision_rules(recipe: Any) -> PrioritizedRules:
    vision = recipe.encoder_configs.vision
    key = "encoder_configs.vision.freeze_backbone"
    option = _option(recipe, key, True, (Freeze(VISION),)) if vision.freeze_backbone else None
    return PrioritizedRules("vision tower", (option,), VISUAL_PROJECTION)


def encoder_freeze_rules(model: nn.Module, recipe: Any) -> list[PrioritizedRules]:
    """The family's freeze settings for `trainers.plan.prepare_model` (none without `encoder_configs`)."""
    if recipe.encoder_configs is None:
        return []
    return [text_rules(model, recipe), vision_rules(recipe)]
