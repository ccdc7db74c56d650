"""Mid-epoch checkpoints: with `training.save_steps=N`, also save every N optimizer steps.

Epoch-end checkpoints (with evaluation) stay as they are; this adds saves inside an epoch so that a
run killed mid-epoch loses at most N steps. A save step that is also the last step of an epoch is
left to the epoch-end save, so each step is written once.
"""

from __future__ import annotations

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from trainers.freezing.progressive import update_steps_per_epoch


class StepCheckpoints(TrainerCallback):
    def __init__(self, every: int) -> None:
        self.every = every
        self.steps_per_epoch: int | None = None

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        dataloader = kwargs.get("train_dataloader")
        if dataloader is not None:
            self.steps_per_epoch = update_steps_per_epoch(len(dataloader), args.gradient_accumulation_steps)

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        step = state.global_step
        epoch_end = self.steps_per_epoch is not None and step % self.steps_per_epoch == 0
        if step % self.every == 0 and not epoch_end and step < state.max_steps:
            control.should_save = True
        return control
