"""Progressive unfreezing that survives DDP and DeepSpeed wrapping.

Flipping `requires_grad` after the model is wrapped trains nothing: the optimizer, DDP's reducer and
ZeRO's flat partitions were all built from the parameters trainable at wrap time. So every parameter
a stage will unfreeze is trainable from the start, sits in its own optimizer group(s), and is *gated*:
a gradient hook replaces its gradient with zeros and its group has weight decay 0, which leaves it
bit-identical under AdamW. At the stage boundary the gate opens, the group's weight decay is restored
and its optimizer state is reset, so it starts exactly as a freshly unfrozen parameter would.

When a gate opens comes from `trainers.freezing.schedule`: a fixed step (`epoch=`, `step=`) or a recorded
plateau decision, so a resumed run re-derives every gate from the global step and the recorded openings.
A stage with `warmup_steps` scales its groups' LR by k/N in the k-th step after the opening (on top of the
recipe's scheduler), which is again a function of the step and the opening, so it resumes exactly.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import nn
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from trainers.errors import FreezeTargetError
from trainers.freezing.schedule import StageSchedule, StageTrigger
from trainers.freezing.selectors import select_parameters
from trainers.optim.state import reset_optimizer_state, set_group_lr_factor, set_group_weight_decay
from trainers.plan_records import StagePlan
from trainers.recipe.config import Stage
from trainers.zero3 import param_numel

logger = logging.getLogger(__name__)


def resolve_stages(
    model: nn.Module, stages: Sequence[Stage], default_patience: int | None = None
) -> list[StagePlan]:
    """Which parameters each stage newly unfreezes (not already trainable, not claimed by an earlier stage).

    `default_patience` (the early-stopping patience) is the patience of a plateau stage that names none.
    """
    params = dict(model.named_parameters())
    claimed = {n for n, p in params.items() if p.requires_grad}
    plans = []
    for i, stage in enumerate(stages):
        names: list[str] = []
        for target in stage.targets():
            try:
                selected = select_parameters(model, target=target)
            except FreezeTargetError as exc:
                raise FreezeTargetError(f"stages[{i}] ({stage.describe_trigger()}): {exc}") from None
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
                step=stage.step,
                on_plateau=stage.on_plateau,
                patience=(stage.patience or default_patience) if stage.on_plateau else None,
                warmup_steps=stage.warmup_steps,
            )
        )
        if not names:
            logger.warning(
                "stage %d (%s) unfreezes nothing new: %s", i, stage.describe_trigger(), stage.targets()
            )
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


def stage_triggers(plans: Sequence[StagePlan]) -> list[StageTrigger]:
    """The schedule's view of the resolved stages."""
    triggers = []
    for plan in plans:
        if plan.on_plateau:
            triggers.append(StageTrigger(plan.index, "plateau", patience=plan.patience))
        elif plan.step is not None:
            triggers.append(StageTrigger(plan.index, "step", at=plan.step))
        else:
            triggers.append(StageTrigger(plan.index, "epoch", at=plan.epoch))
    return triggers


def warmup_factor(step: int, opened_at: int, warmup_steps: int) -> float:
    """LR factor of a re-warming stage in the step that starts at `step`: k/N for the k-th step after opening."""
    if warmup_steps <= 0 or step - opened_at >= warmup_steps:
        return 1.0
    return max(0, step - opened_at) / warmup_steps


class ProgressiveUnfreezing(TrainerCallback):
    """Opens each stage's gate at the first step after its opening (or at resume time, if already past)."""

    def __init__(self, plans: Sequence[StagePlan], gates: Sequence[GradientGate]) -> None:
        self.plans = list(plans)
        self.gates = list(gates)
        self.schedule = StageSchedule(stage_triggers(self.plans))
        self.opened_at_step: dict[int, int] = {}
        self.state_entries_reset: dict[
            int, int
        ] = {}  # per stage: optimizer-state entries dropped on this rank

    @property
    def steps_per_epoch(self) -> int | None:
        return self.schedule.steps_per_epoch

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        self.schedule.steps_per_epoch = update_steps_per_epoch(
            len(kwargs["train_dataloader"]), args.gradient_accumulation_steps
        )
        self.schedule.load(state.log_history)  # plateau openings recorded before a resume
        optimizer = kwargs.get("optimizer")
        for plan, gate in zip(self.plans, self.gates, strict=True):
            step = self.schedule.opening_step(plan.index)
            # Resumed past this opening: the checkpoint's optimizer state already reflects it.
            if step is not None and step < state.global_step and not gate.is_open:
                self._open(plan, gate, optimizer, step, reset_state=False)
        self._rewarm(state.global_step, optimizer, kwargs.get("lr_scheduler"))

    def on_step_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        optimizer = kwargs.get("optimizer")
        for plan, gate in zip(self.plans, self.gates, strict=True):
            step = self.schedule.opening_step(plan.index)
            if not gate.is_open and step is not None and state.global_step >= step:
                self._open(plan, gate, optimizer, state.global_step, reset_state=True)
        self._rewarm(state.global_step, optimizer, kwargs.get("lr_scheduler"))

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        """After the scheduler stepped: the LR the next step uses (what the logs and metrics.jsonl show)."""
        self._rewarm(state.global_step, kwargs.get("optimizer"), kwargs.get("lr_scheduler"))

    def _rewarm(self, step: int, optimizer, scheduler) -> None:
        if optimizer is None:
            return
        factors = {}
        for plan in self.plans:
            opened = self.opened_at_step.get(plan.index)
            if plan.warmup_steps and opened is not None and step - opened <= plan.warmup_steps:
                factor = warmup_factor(step, opened, plan.warmup_steps)
                factors.update({i: factor for i in plan.group_indices})
        if factors:
            set_group_lr_factor(optimizer, scheduler, factors)

    def _open(self, plan: StagePlan, gate: GradientGate, optimizer, step: int, reset_state: bool) -> None:
        gate.open()
        if optimizer is not None:
            set_group_weight_decay(optimizer, plan.group_weight_decay)
            if reset_state:
                self.state_entries_reset[plan.index] = reset_optimizer_state(optimizer, plan.group_indices)
        self.opened_at_step[plan.index] = step
        logger.info(
            "stage %d: unfroze %d tensors (%s params) at step %d (%s): %s",
            plan.index,
            len(plan.param_names),
            f"{plan.num_params:,}",
            step,
            plan.trigger,
            ", ".join(plan.targets),
        )


def stage_openings(unfreezing: ProgressiveUnfreezing) -> list[dict]:
    """For the summary: each stage's trigger and when it opened (step, epoch), or null if it never did."""
    per_epoch = unfreezing.steps_per_epoch
    rows = []
    for plan in unfreezing.plans:
        step = unfreezing.opened_at_step.get(plan.index)
        rows.append(
            {
                "stage": plan.index,
                "trigger": plan.trigger,
                "unfreeze": list(plan.targets),
                "opened_at_step": step,
                "opened_at_epoch": step / per_epoch if step is not None and per_epoch else None,
                "warmup_steps": plan.warmup_steps,
            }
        )
    return rows
