"""Progressive unfreezing that survives DDP and DeepSpeed wrapping.

Flipping `requires_grad` after the model is wrapped trains nothing: the optimizer, DDP's reducer and
ZeRO's flat partitions were all built from the parameters trainable at wrap time. So every parameter
a stage will unfreeze is trainable from the start, sits in its own optimizer group(s), and is *gated*:
a gradient hook replaces its gradient with zeros and its group has weight decay 0, which leaves it
bit-identical under AdamW. At the stage boundary the gate opens, the group's weight decay is restored
and its optimizer state is reset, so it starts exactly as a freshly unfrozen parameter would. The gate
state is a pure function of the global step, so a resumed run re-derives it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import nn
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from trainers.errors import FreezeTargetError
from trainers.freezing.selectors import select_parameters
from trainers.optim.state import reset_optimizer_state, set_group_weight_decay
from trainers.plan_records import StagePlan
from trainers.recipe.config import Stage
from trainers.zero3 import param_numel

logger = logging.getLogger(__name__)


def resolve_stages(model: nn.Module, stages: Sequence[Stage]) -> list[StagePlan]:
    """Which parameters each stage newly unfreezes (not already trainable, not claimed by an earlier stage)."""
    params = dict(model.named_parameters())
    claimed = {n for n, p in params.items() if p.requires_grad}
    plans = []
    for i, stage in enumerate(stages):
        names: list[str] = []
        for target in stage.targets():
            try:
                selected = select_parameters(model, target=target)
            except FreezeTargetError as exc:
                raise FreezeTargetError(f"stages[{i}] (epoch {stage.epoch}): {exc}") from None
            names.extend(n for n in selected if n not in claimed and n not in names)
        claimed.update(names)
        plans.append(
            StagePlan(
                i,
                stage.epoch,
                stage.targets(),
                stage.lr_mult,
                names,
                sum(param_numel(params[n]) for n in names),
            )
        )
        if not names:
            logger.warning("stage %d (epoch %d) unfreezes nothing new: %s", i, stage.epoch, stage.targets())
    return plans


class GradientGate:
    """Zeroes the gradients of a set of parameters until opened."""

    def __init__(self, params: Sequence[nn.Parameter]) -> None:
        self.is_open = False
        for p in params:
            p.requires_grad_(True)
        self._handles = [p.register_hook(self._hook) for p in params]

    def _hook(self, grad: torch.Tensor) -> torch.Tensor:
        return grad if self.is_open else torch.zeros_like(grad)

    def open(self) -> None:
        self.is_open = True

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def install_gates(model: nn.Module, plans: Sequence[StagePlan]) -> list[GradientGate]:
    """Make every stage's parameters trainable-but-gated (before the Trainer builds its optimizer)."""
    params = dict(model.named_parameters())
    return [GradientGate([params[n] for n in plan.param_names]) for plan in plans]


def update_steps_per_epoch(batches_per_epoch: int, grad_accum: int) -> int:
    """Optimizer steps per epoch, by the Trainer's own rule (a partial accumulation counts as a step)."""
    return max(1, -(-batches_per_epoch // grad_accum))


class ProgressiveUnfreezing(TrainerCallback):
    """Opens each stage's gate at the first step of its epoch (or at resume time, if already past)."""

    def __init__(self, plans: Sequence[StagePlan], gates: Sequence[GradientGate]) -> None:
        self.plans = list(plans)
        self.gates = list(gates)
        self.steps_per_epoch: int | None = None
        self.opened_at_step: dict[int, int] = {}
        self.state_entries_reset: dict[
            int, int
        ] = {}  # per stage: optimizer-state entries dropped on this rank

    def boundary_step(self, plan: StagePlan) -> int:
        assert self.steps_per_epoch is not None
        return plan.epoch * self.steps_per_epoch

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        self.steps_per_epoch = update_steps_per_epoch(
            len(kwargs["train_dataloader"]), args.gradient_accumulation_steps
        )
        optimizer = kwargs.get("optimizer")
        for plan, gate in zip(self.plans, self.gates, strict=True):
            # Resumed past this boundary: the checkpoint's optimizer state already reflects the opening.
            if self.boundary_step(plan) < state.global_step and not gate.is_open:
                self._open(plan, gate, optimizer, self.boundary_step(plan), reset_state=False)

    def on_step_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        for plan, gate in zip(self.plans, self.gates, strict=True):
            if not gate.is_open and state.global_step >= self.boundary_step(plan):
                self._open(plan, gate, kwargs.get("optimizer"), state.global_step, reset_state=True)

    def _open(self, plan: StagePlan, gate: GradientGate, optimizer, step: int, reset_state: bool) -> None:
        gate.open()
        if optimizer is not None:
            set_group_weight_decay(optimizer, plan.group_weight_decay)
            if reset_state:
                self.state_entries_reset[plan.index] = reset_optimizer_state(optimizer, plan.group_indices)
        self.opened_at_step[plan.index] = step
        logger.info(
            "stage %d: unfroze %d tensors (%s params) at step %d (epoch %d): %s",
            plan.index,
            len(plan.param_names),
            f"{plan.num_params:,}",
            step,
            plan.epoch,
            ", ".join(plan.targets),
        )
