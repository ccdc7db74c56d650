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


def reset_optimizer_state(optimizer: Any, group_indices: Iterable[int]) -> None:
    """Drop the Adam moments and step count of whole groups: they re-initialise on the next step.

    Under ZeRO-1/2 each group's state is keyed by its flat fp32 partition; under ZeRO-3 by the
    entries of `fp32_partitioned_groups_flat` (the group's `params` list is empty outside `step()`).
    A stage owns whole groups, so resetting a group never touches another stage's state.
    """
    base = base_optimizer(optimizer)
    zero3 = _zero3_optimizer(optimizer)
    for index in group_indices:
        if zero3 is not None:
            keys = [zero3.fp32_partitioned_groups_flat[index]]
        else:
            keys = list(base.param_groups[index]["params"])
        for key in keys:
            base.state.pop(key, None)
