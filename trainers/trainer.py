"""`RecipeTrainer`: the HF Trainer with declared parameter groups, task evaluation and a global token mean.

Checkpoints are written atomically (`trainers.checkpoints.AtomicCheckpoints`); a task's `compute_loss` hook,
when it returns a loss, replaces the model's (`TaskLossMixin`). Three more hooks:
`create_optimizer` builds the groups planned by `build_param_groups` (the path DeepSpeed also
takes, so groups reach ZeRO); `evaluation_loop` adds the task's metrics (of the target val set, and
of each extra validation set under its prefix) and composite scores to the loss the Trainer computes, so
best-checkpoint tracking and early stopping see them like any other metric; `get_batch_samples` + `compute_loss` make the training
loss the mean over every target token of the optimizer step (all ranks, all accumulation batches), so
N ranks x batch b x k accumulation steps train like 1 process x batch N*b*k even when captions differ in
length. The model's own loss is a mean over its batch's tokens; DDP and ZeRO then average those means
over ranks, which weights a token of a short-caption batch more than one of a long-caption batch.
Loading a checkpoint back (resume, best model at the end) does not report tied weights as missing:
they are saved once, under the name they share.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn
from torch.nn.modules.module import _IncompatibleKeys
from transformers import Trainer
from transformers.trainer_utils import EvalLoopOutput

from trainers.callbacks.resources import SeenCounts
from trainers.checkpoints import AtomicCheckpoints, CheckpointError
from trainers.data.loader import stop_workers
from trainers.evaluation import evaluate_all, untouched_random_state
from trainers.fsdp import FsdpSetup
from trainers.lora.names import strip_peft_prefix
from trainers.optim.param_groups import GroupPlan
from trainers.recipe.config import CompositeMetric
from trainers.reporting.summary import START_STEP
from trainers.tasks.interface import Task, TaskLossMixin

Evaluator = Callable[[Trainer], dict[str, float]]
IGNORE_INDEX = -100
EVAL_PREDICTIONS = "eval_predictions.json"  # in each checkpoint: the predictions of its evaluation
LOSS_WINDOW = "loss_window_rank{rank}.json"  # in each checkpoint: this rank's loss since the last logged step


def batch_length(batch: dict) -> int:
    """Items in a collated batch: its labels' length, else the first tensor's first dimension."""
    labels = batch.get("labels")
    if labels is not None and (isinstance(labels, list) or torch.is_tensor(labels) and labels.dim() >= 1):
        return len(labels)
    return next((len(v) for v in batch.values() if torch.is_tensor(v) and v.dim() >= 1), 0)


def count_loss_terms(labels, shifted: bool) -> torch.Tensor | None:
    """How many terms the model's mean loss averages over in one batch; None when labels are not a tensor.

    Labels other than -100; for a decoder that predicts label t+1 from tokens <= t and shifts the labels
    itself (BLIP's text decoder, causal LMs), position 0 is never a target and is not counted.
    """
    if not torch.is_tensor(labels):
        return None
    if shifted and labels.dim() >= 2:
        labels = labels[..., 1:]
    return labels.ne(IGNORE_INDEX).sum()


class RecipeTrainer(TaskLossMixin, AtomicCheckpoints, FsdpSetup, Trainer):
    # Loss terms of the current optimizer step, all ranks and accumulation batches (set by get_batch_samples).
    _step_loss_terms: torch.Tensor | None = None
    seen: SeenCounts | None = None  # samples and target tokens trained on, all ranks (`ResourceUse`)

    def __init__(
        self,
        *args,
        group_plans: Sequence[GroupPlan],
        task: Task | None = None,
        evaluator: Evaluator | None = None,
        extra_evaluators: Sequence[Evaluator] = (),
        composite_metrics: Sequence[CompositeMetric] = (),
        seen: SeenCounts | None = None,
        checkpoint_recipe_hash: str | None = None,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.seen = seen  # the counts `ResourceUse` reports; filled by `get_batch_samples`
        self.checkpoint_recipe_hash = checkpoint_recipe_hash  # written into each checkpoint's manifest
        self.task = task  # its optional `compute_loss` replaces the model's loss (TaskLossMixin)
        self.group_plans = list(group_plans)
        self.evaluator = evaluator
        self.extra_evaluators = list(extra_evaluators)  # further validation sets, each with its metric prefix
        self.composite_metrics = list(composite_metrics)
        # Encoder-decoder models score every label; BLIP's decoder (like causal LMs) shifts them by one.
        self.labels_shifted = not getattr(getattr(self.model, "config", None), "is_encoder_decoder", False)

    def _save_extra_state(self, directory) -> None:
        """The evaluator's last predictions go with the checkpoint: a run resumed at its final evaluation
        (early stopping) writes the same sample captions in its summary as one that was never interrupted."""
        predictions = getattr(self.evaluator, "last_predictions", None)
        if predictions:
            (Path(directory) / EVAL_PREDICTIONS).write_text(
                json.dumps({str(k): v for k, v in predictions.items()})
            )

    def _save_rng_state(self, output_dir) -> None:
        """Every rank, with its RNG state: the training loss summed since the last logged step, and that step.

        The Trainer starts a resumed run's loss window afresh at the resume step, so a checkpoint inside a
        logging window (logging_steps > 1) would log the mean of the steps after the resume only: another
        train loss in metrics.jsonl and the summary than the uninterrupted run's (the weights are the same).
        """
        super()._save_rng_state(output_dir)
        window = {"last_logged_step": self._globalstep_last_logged, "loss_sum": float(self._tr_loss.item())}
        (Path(output_dir) / LOSS_WINDOW.format(rank=self.args.process_index)).write_text(json.dumps(window))

    def _restore_loss_window(self, checkpoint: str) -> None:
        """Continue the logging window the checkpoint was saved in (after the Trainer reset it at train start)."""
        path = Path(checkpoint) / LOSS_WINDOW.format(rank=self.args.process_index)
        if (
            not path.is_file()
        ):  # a checkpoint written before the window was saved: the Trainer's own behaviour
            return
        window = json.loads(path.read_text())
        self._tr_loss.add_(window["loss_sum"])  # same float32 sum as the uninterrupted run holds here
        self._globalstep_last_logged = int(window["last_logged_step"])

    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        self._window_checkpoint = resume_from_checkpoint if isinstance(resume_from_checkpoint, str) else None
        saved = (
            Path(resume_from_checkpoint) / EVAL_PREDICTIONS
            if isinstance(resume_from_checkpoint, str)
            else None
        )
        if saved is not None and saved.is_file() and hasattr(self.evaluator, "last_predictions"):
            self.evaluator.last_predictions = {int(k): v for k, v in json.loads(saved.read_text()).items()}
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def release_loader_workers(self) -> int:
        """Stops the persistent workers of this run's train loader and cached eval loaders (`stop_workers`)."""
        cached = getattr(self, "_eval_dataloaders", None) or {}
        return stop_workers([getattr(self.callback_handler, "train_dataloader", None), *cached.values()])

    def _get_train_sampler(self, train_dataset=None):
        """A training set that orders itself per epoch (`ordered = True`: a task curriculum) is read in index
        order; every other set gets the Trainer's shuffling sampler."""
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if getattr(dataset, "ordered", False):
            return torch.utils.data.SequentialSampler(dataset)
        return super()._get_train_sampler(train_dataset)

    def _run_epoch(self, *args, **kwargs):
        """Train no epoch once a callback stopped training before it began (early stopping on resume).

        The Trainer checks `should_training_stop` only after a step, so without this a run resumed from the
        checkpoint of its stopping evaluation would train on past the stop.
        """
        if self.control.should_training_stop:
            return None
        checkpoint, self._window_checkpoint = getattr(self, "_window_checkpoint", None), None
        if checkpoint is not None:  # the first epoch of a resumed run: the loss state is set up by now
            self._restore_loss_window(checkpoint)
        return super()._run_epoch(*args, **kwargs)

    @property
    def loss_is_scaled_for_ga(self) -> bool:  # read by Trainer.training_step
        """True when `compute_loss` already normalised over the whole step (the Trainer must not divide by k)."""
        return self._step_loss_terms is not None

    def get_batch_samples(self, epoch_iterator, num_batches: int, device):
        """The step's batches and their loss terms summed over the batches and over all ranks."""
        batches, _ = super().get_batch_samples(epoch_iterator, num_batches, device)
        counts = [count_loss_terms(b.get("labels"), self.labels_shifted) for b in batches]
        complete = bool(counts) and all(c is not None for c in counts)
        generative = complete and all(b["labels"].dim() >= 2 for b in batches)
        terms = int(torch.stack([c.cpu() for c in counts]).sum()) if complete else 0
        # [loss terms, samples, target tokens] of this step, summed over the ranks in one collective
        step = torch.tensor(
            [terms, sum(batch_length(b) for b in batches), terms if generative else 0],
            dtype=torch.long,
            device=device,
        )
        if self.args.world_size > 1 and (complete or self.seen is not None):
            step = self.accelerator.gather(step).view(-1, 3).sum(0)  # every rank calls this once per step
        if self.seen is not None:
            self.seen.add(int(step[1]), int(step[2]))
        total = step[0] if complete else None
        self._step_loss_terms = total
        return batches, total

    def compute_loss(self, model, inputs, return_outputs: bool = False, num_items_in_batch=None):
        """The model's batch mean, rescaled to this batch's share of the step's global token sum.

        mean_b * n_b * world / N: DDP/ZeRO average gradients over ranks, which cancels `world`, and the
        accumulation batches add up, so the step's gradient is that of sum(all token losses) / N. With one
        process and no accumulation the factor is exactly 1.0 (n_b == N), so the loss is bit-for-bit the
        model's own.
        """
        local = None
        if num_items_in_batch is not None and model.training:  # counted before the Trainer may pop labels
            local = count_loss_terms(inputs.get("labels"), self.labels_shifted)
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True)
        if local is not None:
            loss = loss * (local.to(loss.device) * self.args.world_size / num_items_in_batch.to(loss.device))
        return (loss, outputs) if return_outputs else loss

    def create_optimizer(self, model=None):
        if self.optimizer is not None:
            return self.optimizer
        opt_model = self.model if model is None else model
        # Plans name parameters of the original model; inside a peft wrapper they gain `base_model.model.`.
        named = {strip_peft_prefix(n): p for n, p in opt_model.named_parameters()}
        planned = {n for g in self.group_plans for n in g.param_names}
        unplanned = [n for n, p in named.items() if p.requires_grad and n not in planned]
        if unplanned:
            raise RuntimeError(
                f"{len(unplanned)} trainable parameters are in no optimizer group (first: {unplanned[:3]}); "
                "param groups must be planned after freezing, stages and adapters are applied."
            )
        groups = [
            {
                "params": [named[n] for n in g.param_names],
                "lr": g.lr,
                "weight_decay": g.initial_weight_decay,
                "name": g.name,
            }
            for g in self.group_plans
        ]
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer

    def evaluate(self, *args, **kwargs) -> dict[str, float]:
        """The evaluation before the first step (`training.eval_on_start`) puts back every random state it
        touched (the eval loader draws its base seed from torch's generator): training is then the same with or
        without it, so turning it on changes no figure of the run."""
        if self.state.global_step != START_STEP:
            return super().evaluate(*args, **kwargs)
        with untouched_random_state():
            return super().evaluate(*args, **kwargs)

    def evaluation_loop(
        self,
        dataloader,
        description: str,
        prediction_loss_only: bool | None = None,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "eval",
    ) -> EvalLoopOutput:
        output = super().evaluation_loop(
            dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix
        )
        if self.evaluator is None and not self.extra_evaluators and not self.composite_metrics:
            return output
        prefix = f"{metric_key_prefix}_"
        metrics = {k.removeprefix(prefix): v for k, v in output.metrics.items()}
        if self.evaluator is not None:
            metrics.update(self.evaluator(self))
        metrics.update(evaluate_all(self.extra_evaluators, self))
        for composite in self.composite_metrics:
            metrics[composite.name] = composite.compute(metrics)
        output.metrics.update({f"{prefix}{k}": v for k, v in metrics.items()})
        return output

    def _issue_warnings_after_load(self, load_result) -> None:
        """The Trainer's missing/unexpected-keys warnings, minus tied aliases whose shared tensor was loaded.

        safetensors stores a tensor once, so BLIP's LM head (`text_decoder.cls.predictions.decoder.*`, tied to
        the word embedding and the prediction bias) is absent from the file; `load_state_dict` copies into the
        shared tensor in place, so the head is loaded too, and a "missing keys" warning would only read as a
        broken checkpoint.
        """
        missing = set(load_result.missing_keys)
        loaded_alias = {
            n
            for names in tied_names(self.model)
            for n in names
            if n in missing and any(other not in missing for other in names)
        }
        kept = [k for k in load_result.missing_keys if k not in loaded_alias]
        if load_result.unexpected_keys:  # tensors of the checkpoint that reached no parameter: never silent
            raise CheckpointError(
                f"A checkpoint holds {len(load_result.unexpected_keys)} tensors the model has no parameter for "
                f"(first: {', '.join(sorted(load_result.unexpected_keys)[:3])}), so loading it would keep "
                "those parameters' current values. It was saved under other names (by another transformers "
                "version, or before checkpoints kept the model's own names). Start the run afresh "
                "(training.resume=never keeps the old run aside), or convert the checkpoint with "
                "from_pretrained + save_pretrained(save_original_format=False)."
            )
        super()._issue_warnings_after_load(_IncompatibleKeys(kept, []))


def tied_names(model: nn.Module) -> list[list[str]]:
    """Groups of parameter names that are one tensor (tied weights), as `named_parameters` spells them."""
    groups: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(param), []).append(name)
    return [names for names in groups.values() if len(names) > 1]
