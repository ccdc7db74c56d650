"""Declared parameter groups → optimizer groups (the recipe's `param_groups`, mmengine-style).

Each trainable parameter lands in exactly one optimizer group keyed by (declared group, unfreezing
stage, decay or not, and with layer-wise LR decay its tower layer). Bias and LayerNorm parameters get no
weight decay (the Trainer's own rule). Stage parameters get groups of their own so a stage can be opened
without touching other state. Empty groups are never emitted (they misalign DeepSpeed's scheduler).

A parameter's LR is `training.lr * mult * layer_decay ** (depth - layer)`: `mult` is its stage's `lr_mult`
when the stage sets one, else its group's; the decay factor (`trainers.optim.layer_decay`) applies on top.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn
from transformers import Trainer

from trainers.errors import FreezeTargetError
from trainers.optim.layer_decay import LayerPosition, LayerStack, layer_positions, no_layout_error
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
    group: str = DEFAULT_GROUP  # the declared group (`default`: none matched)
    layer: LayerPosition | None = None  # with layer-wise LR decay: the tower layer all its parameters sit in
    layer_scale: float = 1.0  # the decay factor in `lr` (1.0 without layer decay)

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
            "layer": self.layer.to_dict() if self.layer is not None else None,
            "layer_scale": self.layer_scale,
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
    layout: Sequence[LayerStack] = (),
    family: str = "",
) -> list[GroupPlan]:
    """Assign every trainable parameter to one group; fill each stage's group indices.

    `layout` (the family's `layers`) places parameters for layer-wise LR decay; `family` names it when a recipe
    asks for decay and there is none.
    """
    all_names = [n for n, _ in model.named_parameters()]
    patterns = [(g, re.compile(g.match)) for g in declared]
    for group, pattern in patterns:
        if not any(pattern.search(n) for n in all_names):
            raise FreezeTargetError(
                f"param_groups[{group.name!r}].match {group.match!r} matches no parameter name of "
                f"{type(model).__name__}. Top-level modules: {', '.join(sorted({n.split('.')[0] for n in all_names}))}."
            )
    decays_layers = training.layer_decay is not None or any(g.layer_decay is not None for g in declared)
    if decays_layers and not layout:
        groups_asking = {g.name: g.layer_decay for g in declared if g.layer_decay is not None}
        keys = [f"training.layer_decay={training.layer_decay}"] if training.layer_decay is not None else []
        raise no_layout_error(
            family or type(model).__name__,
            keys + [f"param_groups[{n!r}].layer_decay={v}" for n, v in groups_asking.items()],
        )
    positions = layer_positions(layout, all_names) if decays_layers else {}
    stage_of = {name: plan for plan in stages for name in plan.param_names}
    decay = decay_parameter_names(model)
    groups: dict[tuple[str, int | None, bool, str | None], GroupPlan] = {}
    matched_trainable: set[str] = set()
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        group = next((g for g, p in patterns if p.search(name)), None)
        if group is not None:
            matched_trainable.add(group.name)
        stage = stage_of.get(name)
        decays = name in decay
        layer_decay = _layer_decay(group, training)
        layer = positions.get(name) if layer_decay is not None else None
        group_name = group.name if group else DEFAULT_GROUP
        key = (group_name, stage.index if stage else None, decays, layer.key if layer else None)
        if key not in groups:
            scale = layer.scale(layer_decay) if layer is not None and layer_decay is not None else 1.0
            groups[key] = GroupPlan(
                name=_group_name(*key),
                param_names=[],
                lr=training.lr * _lr_mult(group, stage) * scale,
                weight_decay=_weight_decay(group, training) if decays else 0.0,
                stage=key[1],
                num_params=0,
                group=group_name,
                layer=layer,
                layer_scale=scale,
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


def _layer_decay(group: ParamGroup | None, training: Training) -> float | None:
    if group is not None and group.layer_decay is not None:
        return group.layer_decay
    return training.layer_decay


def _weight_decay(group: ParamGroup | None, training: Training) -> float:
    if group is not None and group.weight_decay is not None:
        return group.weight_decay
    return training.weight_decay


def _group_name(group: str, stage: int | None, decays: bool, layer: str | None = None) -> str:
    stage_part = f"/stage{stage}" if stage is not None else ""
    layer_part = f"/{layer}" if layer is not None else ""
    return f"{group}{stage_part}{layer_part}/{'decay' if decays else 'no_decay'}"


@dataclass(frozen=True)
class LayerRow:
    """One line of the layer-decay table: a declared group's parameters in one tower layer (decay and
    no-decay optimizer groups together)."""

    group: str
    stage: int | None
    layers: str  # `vision 3/5 vit.layers.2`, or `outside the towers' layers (full rate)`
    lr: float
    params: int

    def to_dict(self) -> dict:
        return {
            "group": self.group,
            "stage": self.stage,
            "layers": self.layers,
            "lr": self.lr,
            "params": self.params,
        }


def layer_table(plans: Sequence[GroupPlan]) -> list[LayerRow]:
    """The layer-decay table `--dry-run` prints; empty when no group decays by layer."""
    if not any(g.layer is not None for g in plans):
        return []
    rows: dict[tuple[str, int | None, str], list] = {}
    for g in plans:
        if g.layer is None:
            where = "heads / outside the towers' layers (full rate)"
        elif g.layer.index == g.layer.depth:
            where = f"{g.layer.stack} {g.layer.index}/{g.layer.depth} top (full rate)"
        else:
            where = f"{g.layer.stack} {g.layer.index}/{g.layer.depth} {g.layer.label}"
        row = rows.setdefault((g.group, g.stage, where), [g.lr, 0])
        row[1] += g.num_params
    return [LayerRow(group, stage, where, lr, params) for (group, stage, where), (lr, params) in rows.items()]
