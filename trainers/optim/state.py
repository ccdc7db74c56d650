"""Reach through optimizer wrappers (accelerate, DeepSpeed ZeRO) to the groups and state that matter.

Group indices are the ones `RecipeTrainer.create_optimizer` declared; every wrapper keeps that order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch


def base_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    """The innermost torch optimizer (AcceleratedOptimizer → DeepSpeed ZeRO → torch.optim.AdamW)."""
    current = optimizer
    while hasattr(current, "optimizer") and current.optimizer is not current:
        current = current.optimizer
    return current


def _zero3_optimizer(optimizer: Any) -> Any | None:
    current = optimizer
    while current is not None:
        if hasattr(current, "fp32_partitioned_groups_flat"):
            return current
        current = getattr(current, "optimizer", None)
    return None


def set_group_weight_decay(optimizer: Any, weight_decay: Mapping[int, float]) -> None:
    """Set weight decay of the given group indices on the base optimizer (wrappers alias its groups)."""
    groups = base_optimizer(optimizer).param_groups
    for index, value in weight_decay.items():
        groups[index]["weight_decay"] = value


def zero3_group_partitions(zero3: Any, index: int) -> list[torch.Tensor]:
    """The flat fp32 partitions (state keys) of declared group `index` under ZeRO-3.

    ZeRO-3 splits each group into sub-groups of at most `sub_group_size` elements, one flat partition
    each, and records which group a sub-group came from; a large group has several.
    """
    mapping = getattr(zero3, "sub_group_to_group_id", None)
    flats = zero3.fp32_partitioned_groups_flat
    if mapping is None:  # older layout: one sub-group per group
        return [flats[index]]
    return [flats[sub] for sub, group in sorted(mapping.items()) if group == index]


def reset_optimizer_state(optimizer: Any, group_indices: Iterable[int]) -> int:
    """Drop the Adam moments and step count of whole groups: they re-initialise on the next step.

    Under ZeRO-1/2 each group's state is keyed by its flat fp32 partition (the group's only `params`
    entry); under ZeRO-3 by the group's entries of `fp32_partitioned_groups_flat` (the group's `params`
    list is empty outside `step()`). A stage owns whole groups, so resetting a group never touches another
    stage's state. Returns how many state entries were dropped (0 is normal on a rank whose ZeRO-3
    partitions of these groups are empty, or before the first step).
    """
    base = base_optimizer(optimizer)
    zero3 = _zero3_optimizer(optimizer)
    states = [base.state]
    backup = getattr(zero3, "backup_optimizer", None) if zero3 is not None else None
    if backup is not None:  # partial optimizer offload keeps some sub-groups' state in a second optimizer
        states.append(backup.state)
    dropped = 0
    for index in group_indices:
        if zero3 is not None:
            keys = zero3_group_partitions(zero3, index)
        else:
            keys = list(base.param_groups[index]["params"])
        for key in keys:
            for state in states:
                dropped += state.pop(key, None) is not None
    return dropped


def set_group_lr_factor(optimizer: Any, scheduler: Any, factors: Mapping[int, float]) -> None:
    """Set each group's LR to the scheduler's current value times its factor (a stage's re-warm-up).

    The value is set, never multiplied in place, so calling it twice, or again after a resume (which restores
    the scaled LR with the optimizer state), gives the same LR. Without a scheduler the factor applies to the
    group's starting LR.
    """
    groups = base_optimizer(optimizer).param_groups
    scheduled = scheduler.get_last_lr() if scheduler is not None else None
    for index, factor in factors.items():
        group = groups[index]
        base = scheduled[index] if scheduled is not None else group.get("initial_lr", group["lr"])
        group["lr"] = base * factor
