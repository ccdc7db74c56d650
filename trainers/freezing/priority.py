"""Mutually exclusive freeze settings with a priority order, applied through the freeze engine.

Some configs offer several ways to say what is frozen (a regex, "the first N layers", "the whole backbone")
and let the most specific one win. Each way is a `RuleOption` (its recipe key, its value, the `Freeze` /
`Unfreeze` rules it means); the highest set option of a `PrioritizedRules` is applied with
`apply_freeze_rules`, the lower ones that were also set are named as overridden, and the `protect` rules
(`Unfreeze`) run last whatever won (projection heads are never frozen). Nothing here knows a model family.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from trainers.errors import FreezeTargetError
from trainers.freezing.rules import RuleEffect, apply_freeze_rules
from trainers.recipe.config import Freeze

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RuleOption:
    """One setting: `key=value` (with `where` it was set: a YAML file and line, the command line) → rules."""

    key: str
    value: object
    rules: tuple[Freeze, ...]
    where: str = ""

    def describe(self) -> str:
        return f"{self.key}={self.value!r}"

    def prefix(self) -> str:
        return f"{self.where}: " if self.where else ""


@dataclass(frozen=True)
class PrioritizedRules:
    """Options highest priority first (None: not set); `protect` rules run after the winner."""

    name: str
    options: tuple[RuleOption | None, ...]
    protect: tuple[Freeze, ...] = ()


def apply_prioritized(model: nn.Module, groups: Sequence[PrioritizedRules]) -> list[RuleEffect]:
    """Apply the winning option of each group, then its protect rules; one `RuleEffect` per applied rule and
    one (0 parameters) per overridden option, so the plan's rule list says what was not applied and why."""
    effects: list[RuleEffect] = []
    for group in groups:
        chosen, *overridden = [o for o in group.options if o is not None] or [None]
        if chosen is not None:
            try:
                applied = apply_freeze_rules(model, chosen.rules)
            except FreezeTargetError as exc:
                message = str(exc).split(": ", 1)[-1]
                raise FreezeTargetError(f"{chosen.prefix()}{chosen.describe()}: {message}") from None
            params = sum(e.params for e in applied if not e.rule.startswith("unfreeze"))
            logger.info(
                "Froze %s parameters matching %s (%s)",
                f"{params:,}",
                chosen.describe(),
                "; ".join(e.rule for e in applied),
            )
            effects += [RuleEffect(f"{chosen.describe()}: {e.rule}", e.tensors, e.params) for e in applied]
            for lower in overridden:
                logger.info(
                    "%s overrides %s (lower priority: not applied)", chosen.describe(), lower.describe()
                )
                effects.append(
                    RuleEffect(f"{lower.describe()}: overridden by {chosen.key} (not applied)", 0, 0)
                )
        for effect in apply_freeze_rules(model, group.protect) if group.protect else []:
            effects.append(
                RuleEffect(f"{group.name}: {effect.rule} (never frozen)", effect.tensors, effect.params)
            )
    return effects
