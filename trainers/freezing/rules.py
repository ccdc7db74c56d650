"""Apply declared Freeze/Unfreeze rules to a model, in order, and record what each rule did."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from trainers.errors import FreezeTargetError
from trainers.freezing.selectors import select_parameters
from trainers.recipe.config import Freeze
from trainers.zero3 import param_numel


@dataclass(frozen=True)
class RuleEffect:
    """What one rule selected (tensors and scalar parameter count)."""

    rule: str
    tensors: int
    params: int


def apply_freeze_rules(model: nn.Module, rules: Sequence[Freeze]) -> list[RuleEffect]:
    """Set `requires_grad` per rule. Everything starts trainable; later rules override earlier ones."""
    sizes = {n: param_numel(p) for n, p in model.named_parameters()}
    params = dict(model.named_parameters())
    effects = []
    for i, rule in enumerate(rules):
        try:
            names = select_parameters(model, target=rule.target, regex=rule.regex, within=rule.within)
        except FreezeTargetError as exc:
            raise FreezeTargetError(f"freeze[{i}] ({rule.describe()}): {exc}") from None
        for name in names:
            params[name].requires_grad_(rule.requires_grad)
        effects.append(RuleEffect(rule.describe(), len(names), sum(sizes[n] for n in names)))
    return effects
