"""Declared parameter groups → optimizer groups (the recipe's `param_groups`, mmengine-style).

Each trainable parameter lands in exactly one optimizer group keyed by (declared group, unfreezing
stage, decay or not). Bias and LayerNorm parameters get no weight decay (the Trainer's own rule).
Stage parameters get groups of their own so a stage can be opened without touching other state.
Empty groups are never emitted (they misalign DeepSpeed's scheduler).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn
from transformers import Trainer

from trainers.errors import FreezeTargetError
from trainers.plan_records import StagePlan
from trainers.recipe.config import ParamGroup, Training
from trainers.zero3 import param_numel

logger = logging.getLogger(__name__)

DEFAULT_GROUP = "default"


@dataclass
class GroupPlan:
    """One optimizer group as it will be built."""

    name: str
    param_names: list[str]
    lr: float
    weight_decay: float
    stage: int | None
    num_params: int

    @property
    def initial_weight_decay(self) -> float:
        """Gated stage groups start with no decay so their frozen values stay bit-identical."""
        return 0.0 if self.stage is not None else self.weight_decay

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "stage": self.stage,
            "tensors": len(self.param_names),
            "params": self.num_params,
        }


def decay_parameter_names(model: nn.Module) -> set[str]:
    """Parameters that get weight decay: the Trainer's rule (no bias, no LayerNorm/RMSNorm)."""
    return set(Trainer.get_decay_parameter_names(None, model))  # the method uses no Trainer state


def build_param_groups(
    model: nn.Module,
    declared: Sequence[ParamGroup],
    training: Training,
    stages: Sequence[StagePlan] = (),
) -> list[GroupPlan]:
    """Assign every trainable parameter to one group; fill each stage's group indices."""
    all_names = [n for n, _ in model.named_parameters()]
    patterns = [(g, re.compile(g.match)) for g in declared]
    for group, pattern in patterns:
        if not any(pattern.search(n) for n in all_names):
            raise FreezeTargetError(
                f"param_groups[{group.name!r}].match {group.match!r} matches no parameter name of "
                f"{type(model).__name__}. Top-level modules: {', '.join(sorted({n.split('.')[0] for n in all_names}))}."
            )
    stage_of = {name: plan for plan in stages for name in plan.param_names}
    decay = decay_parameter_names(model)
    groups: dict[tuple[str, int | None, bool], GroupPlan] = {}
    matched_trainable: set[str] = set()
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        group = next((g for g, p in patterns if p.search(name)), None)
        if group is not None:
            matched_trainable.add(group.name)
        stage = stage_of.get(name)
        decays = name in decay
        key = (group.name if group else DEFAULT_GROUP, stage.index if stage else None, decays)
        if key not in groups:
            groups[key] = GroupPlan(
                name=_group_name(*key),
                param_names=[],
                lr=training.lr * _lr_mult(group, stage),
                weight_decay=_weight_decay(group, training) if decays else 0.0,
                stage=key[1],
                num_params=0,
            )
        groups[key].param_names.append(name)
        groups[key].num_params += param_numel(param)
    for group in declared:
        if group.name not in matched_trainable:
            logger.warning("param group %r matches only frozen parameters; it stays empty", group.name)
    plans = list(groups.values())
    for stage in stages:
        stage.group_indices = [i for i, g in enumerate(plans) if g.stage == stage.index]
        stage.group_weight_decay = {i: plans[i].weight_decay for i in stage.group_indices}
    return plans


def _lr_mult(group: ParamGroup | None, stage: StagePlan | None) -> float:
    if stage is not None and stage.lr_mult is not None:
        return stage.lr_mult
    return group.lr_mult if group is not None else 1.0


def _weight_decay(group: ParamGroup | None, training: Training) -> float:
    if group is not None and group.weight_decay is not None:
        return group.weight_decay
    return training.weight_decay


def _group_name(group: str, stage: int | None, decays: bool) -> str:
    stage_part = f"/stage{stage}" if stage is not None else ""
    return f"{group}{stage_part}/{'decay' if decays else 'no_decay'}"
