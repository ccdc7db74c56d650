"""One training run inside a worker process: start → model → freezing → data → evaluator → Trainer → outputs.

Every process of a distributed run executes this; only the main process writes files. Nothing here knows a
model family or a task: the recipe's data names its task (`trainers.tasks.registry`), the recipe's
`model.family` its registry entry (`trainers.models.registry`); both are looked up once
(`trainers.recipe.resolved.ResolvedRecipe`) and asked for what differs.

`setup_run` reads as the table of contents: `RunStart.open` (output dir and its lock, data, rerun decision, seed, W&B) →
Trainer arguments → model → freezing/LoRA/groups and the plan → `RunStart.write_records` → task data →
evaluators → Trainer with its `RunCallbacks`. `complete_run` trains and writes the outputs.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback, TrainingArguments, set_seed

from trainers import checkpoints, rerun, run_lock
from trainers.atomic_files import failed_target, is_write_failure, write_failure
from trainers.callbacks.dataset_epoch import DatasetEpoch
from trainers.callbacks.early_stopping import MetricEarlyStopping
from trainers.callbacks.metrics_log import EpochMetricsLog
from trainers.callbacks.overfitting import OverfittingWatch
from trainers.callbacks.preemption import SlurmPreemption
from trainers.callbacks.resources import ResourceUse, SeenCounts
from trainers.callbacks.step_checkpoints import StepCheckpoints
from trainers.data.fingerprint import FINGERPRINT_JSON, fingerprint
from trainers.data.loader import loader_settings, resolve_num_workers
from trainers.data.mixing import MixedDataset, build_task_data
from trainers.data_policy import check_train_size, data_report
from trainers.distributed import WorldGuard, check_world, finish_distributed, launcher_world_size
from trainers.errors import RecipeError, UserFacingError
from trainers.evaluation import ShardedEvaluator
from trainers.freezing.progressive import ProgressiveUnfreezing, stage_openings
from trainers.fsdp import fsdp_arguments
from trainers.launchers.deepspeed_config import deepspeed_config_for
from trainers.plan import PreparedModel, best_metric, build_run_plan, load_model, prepare_model
from trainers.recipe.checks import check_data_paths
from trainers.recipe.config import CompositeMetric, Recipe, to_dict
from trainers.recipe.resolved import ResolvedRecipe, resolve_recipe
from trainers.reporting import start_weights
from trainers.reporting.memory import PeakMemoryCallback
from trainers.reporting.model_card import CardFacts, data_fingerprints, reproduce_command, write_model_card
from trainers.reporting.plots import plot_eval_metrics, plot_train_loss
from trainers.reporting.progress import progress_enabled
from trainers.reporting.summary import baseline_report, eval_history, split_start, write_json
from trainers.reporting.wandb import WandbRunExtras, configure_wandb, finish_run, persist_wandb_run_id
from trainers.tasks.interface import Task, TaskData
from trainers.trainer import RecipeTrainer
from trainers.zero3 import local_share, ready_for_partitioned_loading

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
BEST = "best"
METRICS_JSONL = "metrics.jsonl"
EVAL_ARTIFACTS = "eval"  # the task's files for the latest evaluation (a confusion matrix)


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def build_training_arguments(
    recipe: Recipe, task: Task, output_dir: Path, report_to: list[str], resuming: bool = False
) -> TrainingArguments:
    t = recipe.training
    metric, greater = best_metric(recipe, task)
    has_cuda = torch.cuda.is_available()
    precision = t.precision
    if precision == "auto":
        precision = "bf16" if has_cuda and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "fp16" and not has_cuda:
        raise RecipeError(
            "training.precision=fp16 trains with the Trainer's loss scaling (a GradScaler), which needs a CUDA "
            "GPU, and this process has none. Use training.precision=bf16 (autocast, no loss scaling: it runs "
            "on CPU too and keeps fp32's exponent range) or fp32."
        )
    loader = loader_settings(t.num_workers, has_cuda)
    return TrainingArguments(
        output_dir=str(output_dir / CHECKPOINTS),
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.eval_batch_size or t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.lr,
        lr_scheduler_type=t.lr_scheduler,
        warmup_steps=t.warmup_steps,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        optim=t.optim,
        seed=t.seed,
        data_seed=t.seed,
        eval_strategy="epoch",
        # the start evaluation once, on a fresh run: a resumed one has it in its restored log history
        eval_on_start=t.eval_on_start and not resuming,
        save_strategy="epoch",
        logging_strategy="steps",
        logging_steps=t.logging_steps,
        load_best_model_at_end=True,
        metric_for_best_model=metric,
        greater_is_better=greater,
        save_total_limit=t.save_total_limit,
        report_to=report_to,
        run_name=recipe.reporting.run_name or recipe.name,
        # On CPU the Trainer silently runs every rank unsharded unless use_cpu is set (see FIELD-NOTES).
        use_cpu=not has_cuda,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        dataloader_num_workers=loader.num_workers,
        dataloader_persistent_workers=loader.persistent_workers,
        dataloader_pin_memory=loader.pin_memory,
        remove_unused_columns=False,
        # the Trainer's own evaluation gives the loss only: the task's evaluator predicts and scores, so the
        # logits (vocab x tokens x samples: tens of GB for a chat VLM's validation set) are never gathered
        prediction_loss_only=True,
        ddp_find_unused_parameters=False,
        deepspeed=deepspeed_config_for(
            recipe.launch,
            t,
            launcher_world_size(),
            param_groups=recipe.param_groups,
            stages=recipe.stages,
            precision=precision,
        ),
        **fsdp_arguments(recipe, launcher_world_size()),  # launch.engine=fsdp on several ranks: FSDP2
        disable_tqdm=not progress_enabled(),  # the Trainer's bars: a terminal, not --quiet
    )


def prepare_output_dir(recipe: Recipe, output_dir: Path) -> str | None:
    """Decide what this run does with a previous run in `output_dir` (`trainers.rerun`), act on it, and
    return the checkpoint to resume from (None: start afresh).

    Raises `RerunRefused` (the recipe changed in a way the run cannot continue) or `RunAlreadyComplete`.
    Every rank decides from the same files; only rank 0 moves or deletes them. Only complete checkpoints
    count (manifest present, every file at its recorded size); leftovers of an interrupted save are removed.
    """
    checkpoints_dir = output_dir / CHECKPOINTS
    decision = rerun.decide(recipe, output_dir, launcher_world_size())
    if decision.action == "complete":
        raise rerun.RunAlreadyComplete(decision.reason, decision.summary or {})
    if is_main_process():
        rerun.apply(decision, output_dir)
        checkpoints.remove_partial_checkpoints(checkpoints_dir)
    if decision.resume_from is None:
        return None
    rerun.report(decision, output_dir)
    checkpoints.find_resume_checkpoint(
        checkpoints_dir, checkpoints.recipe_hash(to_dict(recipe))
    )  # logs the choice
    return decision.resume_from


@dataclass(frozen=True)
class RunStart:
    """The start-of-run housekeeping: where the run writes, what it resumes from, where it reports.

    `open` runs before any model is loaded (the output dir is writable and locked for this run, the data exists, the previous run
    there is continued or set aside by `trainers.rerun`, the seed is set, W&B is configured: the Trainer's
    arguments need it, and under ZeRO-3 they must exist before the load). `write_records` runs once the plan
    exists: the files that say how this run started.
    """

    output_dir: Path
    resume_from: str | None  # the checkpoint to resume from; None: start afresh
    report_to: list[str]

    @classmethod
    def open(cls, resolved: ResolvedRecipe) -> RunStart:
        recipe = resolved.recipe
        output_dir = Path(recipe.resolved_output_dir())
        checkpoints.ensure_writable(output_dir, "output_dir")
        if is_main_process():  # one run at a time there, until this process ends (`run_training` releases it)
            run_lock.hold(output_dir)
        try:
            check_data_paths(resolved)  # before the output dir is touched or a model is loaded or downloaded
            resume_from = prepare_output_dir(recipe, output_dir)
        except BaseException:  # refused, already complete, data missing: the folder is left as it was
            run_lock.release(output_dir)
            raise
        set_seed(recipe.training.seed)
        report_to = configure_wandb(
            recipe.reporting, output_dir, recipe.name, recipe.launch.launcher, recipe.launch.zero
        )
        return cls(output_dir, resume_from, report_to)

    def write_records(self, recipe: Recipe, plan: Any) -> None:
        """On the main process: the W&B run id, `recipe.json`, the data's fingerprint, `plan.json`, `freeze_report.txt`, and
        `metrics.jsonl` cut back to the step the run starts from."""
        if not is_main_process():
            return
        if self.report_to:
            persist_wandb_run_id(self.output_dir, resuming=self.resume_from is not None)
        write_json(self.output_dir / "recipe.json", to_dict(recipe))
        write_json(
            self.output_dir / FINGERPRINT_JSON, fingerprint(recipe.data, self.output_dir)
        )  # data changed in place: rerun
        write_json(self.output_dir / "plan.json", plan.to_dict())
        (self.output_dir / "freeze_report.txt").write_text(plan.render() + "\n")
        _truncate_metrics_log(self.output_dir / METRICS_JSONL, self.resume_from)


@dataclass(frozen=True)
class RunCallbacks:
    """The run's callbacks, built once; the summary reads them here instead of searching the Trainer's list."""

    unfreezing: ProgressiveUnfreezing
    resources: ResourceUse
    metrics_log: EpochMetricsLog
    overfitting: OverfittingWatch
    world_guard: WorldGuard
    early_stopping: MetricEarlyStopping | None = None
    others: tuple[TrainerCallback, ...] = ()  # the rest (and the recipe's own), in the order they run


@dataclass
class RunContext:
    """Everything a run builds before training starts (tests can adjust it before `complete_run`)."""

    recipe: Recipe
    output_dir: Path
    prepared: PreparedModel
    task: Task
    data: TaskData
    trainer: RecipeTrainer
    callbacks: RunCallbacks
    resume_from: str | None
    started: float
    held_at_load: int = 0  # parameters this rank held right after loading (ZeRO-3: its shard)
    family: Any = None  # the recipe's `FamilyEntry` (the model card names its classes)
    command: str | None = None  # the command that reproduces the run (the model card's)


def configure_cpu_threads() -> int:
    """On CPU, split the cores between the local ranks unless OMP_NUM_THREADS says otherwise.

    Oversubscribed OpenMP pools (2 ranks x 2 threads on 2 cores) made tiny-model steps ~40x slower here.
    """
    if torch.cuda.is_available() or "OMP_NUM_THREADS" in os.environ:
        return torch.get_num_threads()
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    threads = max(1, (os.cpu_count() or 1) // local_world)
    torch.set_num_threads(threads)
    return threads


def setup_run(recipe: Recipe | ResolvedRecipe, overrides: list[str] | None = None) -> RunContext:
    """Model, freezing, plan files, task and Trainer — everything up to `train()`."""
    started = time.time()
    configure_cpu_threads()
    resolved = resolve_recipe(recipe)  # metric names were checked at recipe load; a missing one still fails
    recipe, task = resolved.recipe, resolved.task
    start = RunStart.open(resolved)
    # Before the model: under ZeRO-3 these arguments make transformers load it inside deepspeed.zero.Init,
    # already partitioned, instead of whole on every rank (`args` must outlive the load: a weak reference).
    args = build_training_arguments(
        recipe, task, start.output_dir, start.report_to, resuming=start.resume_from is not None
    )
    ready_for_partitioned_loading()

    model, processor, source = load_model(resolved)
    held_at_load = local_share(model)[0]  # ZeRO-3: this rank's shard only
    if is_main_process():  # what the run starts from, for trainers.analysis.param_change
        start_weights.record(model, start.output_dir)
    model.accepts_loss_kwargs = False  # loss is a per-batch mean; don't rescale it by num_items_in_batch
    prepared = prepare_model(model, processor, source, resolved)
    plan = build_run_plan(resolved, prepared, overrides=overrides)
    start.write_records(recipe, plan)
    logger.info("run plan:\n%s", plan.render())

    data = build_task_data(task, recipe, processor)  # a mixed training split: one build per source
    check_train_size(
        len(data.train),
        args.per_device_train_batch_size,
        args.gradient_accumulation_steps,
        args.world_size,
        recipe.data.train,
    )
    evaluator = _evaluator(recipe, task, data, data.val, start.output_dir / EVAL_ARTIFACTS)
    extra = [
        _evaluator(recipe, task, data, dataset, start.output_dir / EVAL_ARTIFACTS / name, f"{name}_")
        for name, dataset in data.extra_val.items()
    ]
    trainer, callbacks = _build_trainer(recipe, prepared, task, data, evaluator, extra, args, plan)
    return RunContext(
        recipe,
        start.output_dir,
        prepared,
        task,
        data,
        trainer,
        callbacks,
        start.resume_from,
        started,
        held_at_load,
        resolved.family,
        reproduce_command(resolved.source, overrides or [], recipe.model.use_demo_model),
    )


def complete_run(ctx: RunContext) -> dict[str, Any]:
    """Train, keep the best model, write summary and plots."""
    trainer = ctx.trainer
    try:
        result = trainer.train(resume_from_checkpoint=ctx.resume_from)
        test_metrics = _evaluate_test_split(ctx)  # the best model is loaded back at the end of train()
        best_dir = ctx.output_dir / BEST
        lora = None
        with _final_files(ctx):
            if ctx.prepared.lora is not None:
                lora = _save_lora_outputs(ctx, best_dir)
            else:
                trainer.save_model(str(best_dir))
        summary = _summary(ctx, result, best_dir)
        summary["test_metrics"] = test_metrics
        if lora is not None:
            summary["lora"] = lora
        with _final_files(ctx):
            ctx.callbacks.world_guard.write(ctx.output_dir)
            if trainer.is_world_process_zero():
                write_model_card(best_dir, _card_facts(ctx, summary))  # best/README.md
                _write_outputs(
                    ctx.output_dir, trainer, summary, plots=ctx.recipe.reporting.plots
                )  # summary last
        if trainer.is_world_process_zero():
            finish_run(summary)  # W&B (when on): resource totals into the run summary, run closed
    finally:
        trainer.evaluator.close()
        trainer.release_loader_workers()
    return summary


def run_training(recipe: Recipe | ResolvedRecipe, overrides: list[str] | None = None) -> dict[str, Any]:
    """Train one recipe end to end; returns the summary written to `training_summary.json`."""
    try:
        summary = complete_run(setup_run(recipe, overrides))
    except rerun.RunAlreadyComplete as done:  # nothing trained, nothing written: the finished run's summary
        logger.warning("%s", done.message)
        return done.summary
    except BaseException:
        finish_distributed(barrier=False)  # other ranks may be gone: don't wait for them
        raise
    finally:
        run_lock.release()
    finish_distributed()
    return summary


def _save_lora_outputs(ctx: RunContext, best_dir: Path) -> dict[str, Any]:
    """The adapter in `best/` (stock peft format, gathered under ZeRO-3), optionally `merged/`; sizes."""
    from trainers.lora.export import directory_bytes, save_adapter, save_merged

    plan, lora, main = ctx.prepared.lora, ctx.recipe.lora, ctx.trainer.is_world_process_zero()
    save_adapter(ctx.trainer.model, best_dir, ctx.prepared.processor, is_main=main, bias=lora.bias)
    merged_dir = ctx.output_dir / "merged"
    if lora.save_merged and main:
        save_merged(lambda: _unquantized_base(ctx.recipe), best_dir, merged_dir, ctx.prepared.processor, plan)
    adapter_bytes = directory_bytes(best_dir) if main else plan.adapter_bytes
    full_bytes = directory_bytes(merged_dir) if lora.save_merged and main else plan.base_bytes
    return {
        "adapter_dir": str(best_dir),
        "merged_dir": str(merged_dir) if lora.save_merged else None,
        "adapter_bytes": adapter_bytes,
        "full_model_bytes": full_bytes,
        "adapter_vs_full": adapter_bytes / full_bytes if full_bytes else None,
        "lora_matrix_bytes": plan.lora_bytes,  # of the adapter: the rest is processor files and saved modules
        "lora_params": plan.lora_params,
        "modules_to_save_params": plan.saved_module_params,
        "trainable_params_peft": plan.trainable,
        "modules_to_save": plan.modules_to_save,
        "targets_by_tower": {k: len(v) for k, v in plan.targets.items()},
    }


def _unquantized_base(recipe: Recipe) -> Any:
    """The base model again, never quantized: a merged export goes onto the real weights, not 4/8-bit ones."""
    import dataclasses

    from trainers.zero3 import unpartitioned_loading

    with unpartitioned_loading():  # the main process alone: under ZeRO-3 a partitioned load is a collective
        return load_model(
            dataclasses.replace(recipe, model=dataclasses.replace(recipe.model, quantization=None))
        )[0]


def _evaluator(
    recipe: Recipe, task: Task, data: TaskData, dataset: Any, artifacts_dir: Path, prefix: str = ""
) -> ShardedEvaluator:
    return ShardedEvaluator(
        task,
        dataset,
        data.eval_collator,
        _eval_batch_size(recipe),
        prefix=prefix,
        artifacts_dir=artifacts_dir,
        num_workers=resolve_num_workers(recipe.training.num_workers, torch.cuda.is_available()),
    )


def _evaluate_test_split(ctx: RunContext) -> dict[str, float] | None:
    """The test split, once, with the best model, on every rank (a collective); reported apart from validation
    (`test_metrics` in the summary, the task's files in `eval/test/`)."""
    if ctx.data.test is None:
        return None
    evaluator = _evaluator(
        ctx.recipe, ctx.task, ctx.data, ctx.data.test, ctx.output_dir / EVAL_ARTIFACTS / "test", "test_"
    )
    metrics = evaluator(ctx.trainer)
    logger.info("test split (best model): %s", metrics)
    return metrics


def _eval_batch_size(recipe: Recipe) -> int:
    """The task's evaluation batch size (every eval config has `batch_size`), else the training eval batch."""
    t = recipe.training
    return recipe.evaluation.batch_size or t.eval_batch_size or t.batch_size


def _build_trainer(
    recipe: Recipe,
    prepared: PreparedModel,
    task: Task,
    data: TaskData,
    evaluator: ShardedEvaluator,
    extra_evaluators: list[ShardedEvaluator],
    args: TrainingArguments,
    plan: Any,
) -> tuple[RecipeTrainer, RunCallbacks]:
    composites = (
        [recipe.early_stopping.metric]
        if recipe.early_stopping and isinstance(recipe.early_stopping.metric, CompositeMetric)
        else []
    )
    output_dir = Path(recipe.resolved_output_dir())
    seen = SeenCounts()
    unfreezing = ProgressiveUnfreezing(prepared.stages, prepared.gates)
    resources = ResourceUse(seen)  # time per epoch apart from eval, samples/s, tokens/s, peak memory
    metrics_log = EpochMetricsLog(output_dir / METRICS_JSONL, prepared.count_trainable)
    early_stopping = None
    if recipe.early_stopping is not None:
        es = recipe.early_stopping
        early_stopping = MetricEarlyStopping(
            es.metric_name, es.patience, es.mode, es.min_delta, schedule=unfreezing.schedule
        )
    overfitting = OverfittingWatch(
        *best_metric(recipe, task)
    )  # reports only; stopping is early_stopping's job
    callbacks: list[TrainerCallback] = [
        unfreezing,
        resources,
        metrics_log,
        PeakMemoryCallback(output_dir),  # peak_memory.json (the LoRA-vs-full report)
    ]
    if hasattr(data.train, "set_epoch"):  # seeded per-epoch augmentation
        callbacks.append(DatasetEpoch(data.train))
    if early_stopping is not None:
        callbacks.append(early_stopping)
    callbacks.append(overfitting)
    if recipe.training.save_steps:
        callbacks.append(StepCheckpoints(recipe.training.save_steps))
    if args.report_to and "wandb" in args.report_to:
        callbacks.append(
            WandbRunExtras(
                {"recipe": to_dict(recipe), "plan": plan.to_dict()},
                plan.freeze,
                lambda: dict(unfreezing.opened_at_step),
                [evaluator, *extra_evaluators],
            )
        )
    callbacks.extend(recipe.callbacks)
    if os.environ.get("SLURM_JOB_ID"):  # USR1 before the time limit / preemption: checkpoint and requeue
        callbacks.append(SlurmPreemption(recipe.resolved_output_dir(), requeue=recipe.slurm.requeue))
    trainer = RecipeTrainer(
        model=prepared.model,
        args=args,
        train_dataset=data.train,
        eval_dataset=data.val,
        data_collator=data.collator,
        processing_class=prepared.processor,
        callbacks=callbacks,
        group_plans=prepared.groups,
        task=task,
        evaluator=evaluator,
        extra_evaluators=extra_evaluators,
        composite_metrics=composites,
        seen=seen,
        checkpoint_recipe_hash=checkpoints.recipe_hash(to_dict(recipe)),
    )
    check_world(
        trainer, args.deepspeed, fsdp=bool(args.fsdp)
    )  # and again with each rank's dataloader at train start (WorldGuard)
    world_guard = WorldGuard(trainer, args.deepspeed, fsdp=bool(args.fsdp))
    trainer.add_callback(world_guard)
    named = {id(c) for c in (unfreezing, resources, metrics_log, overfitting, early_stopping)}
    others = tuple(c for c in callbacks if id(c) not in named)
    return trainer, RunCallbacks(
        unfreezing, resources, metrics_log, overfitting, world_guard, early_stopping, others
    )


def _summary(ctx: RunContext, result: Any, best_dir: Path) -> dict[str, Any]:
    recipe, prepared, trainer, started = ctx.recipe, ctx.prepared, ctx.trainer, ctx.started
    start, history = split_start(eval_history(trainer.state.log_history))
    metric, greater = best_metric(recipe, ctx.task)
    best = None
    if history and metric in history[0]:
        best = (max if greater else min)(history, key=lambda r: r[metric])
    callbacks = ctx.callbacks
    stopper, watch = callbacks.early_stopping, callbacks.overfitting
    total = prepared.freeze.total
    return {
        "recipe": recipe.name,
        "model_id": recipe.model.id,
        "model_source": prepared.source,
        "params": {
            "total": total,
            "trainable_at_start": prepared.freeze.trainable,
            "trainable_at_end": prepared.count_trainable(),
            "scheduled_by_stages": prepared.freeze.scheduled,
            "held_by_main_process_at_load": ctx.held_at_load,
        },
        "stages_opened_at_step": {str(k): v for k, v in callbacks.unfreezing.opened_at_step.items()},
        "stages": stage_openings(callbacks.unfreezing),
        "world_size": trainer.args.world_size,
        "global_steps": trainer.state.global_step,
        "epochs_completed": trainer.state.epoch,
        # over the whole run: the Trainer's own value covers only the steps since the last resume
        "train_loss": _mean_logged_loss(trainer.state.log_history, result.training_loss),
        "best_metric": {
            "name": metric,
            "value": best.get(metric) if best else None,
            "at_start": start.get(metric) if start else None,  # before the first step (eval_on_start)
        },
        "best_epoch": best.get("epoch") if best else None,
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "best_model_dir": str(best_dir),
        "start_metrics": start,
        "final_metrics": history[-1] if history else None,
        "best_metrics": best,
        "baseline": baseline_report(ctx.task.baseline(), best, metric),
        "early_stopping": (
            {
                "stopped_at_step": stopper.stopped_at_step,
                "patience": stopper.patience,
                "metric": stopper.metric_key,
            }
            if stopper
            else None
        ),
        "overfitting": watch.signal.to_dict() if watch.signal else None,
        "seconds_per_epoch": callbacks.metrics_log.epoch_seconds,
        "resources": callbacks.resources.summary(),
        "wall_seconds": time.time() - started,
        "data": data_report(*ctx.data.splits()),
        # a mixed training split: each source's size, probability and samples drawn in each epoch begun
        "data_mix": (
            ctx.data.train.report(math.ceil(trainer.state.epoch or 0))
            if isinstance(ctx.data.train, MixedDataset)
            else None
        ),
        "examples": trainer.evaluator.examples(),
        "config": to_dict(recipe),
    }


def _card_facts(ctx: RunContext, summary: dict[str, Any]) -> CardFacts:
    """What the model card of `best/` says, from the summary, the recipe and the data the run read."""
    recipe, task = ctx.recipe, ctx.task
    family = ctx.family if ctx.family is not None else resolve_recipe(recipe).family
    baseline = task.baseline()
    labels = {
        k: v for k, v in task.model_kwargs(recipe).items() if isinstance(v, (int, float, str, dict, list))
    }
    return CardFacts(
        recipe=to_dict(recipe),
        summary=summary,
        task=task.name,
        family=family.name,
        pipeline_tag=task.pipeline_tag,
        model_class=family.model_class(),
        processor_class=family.processor_class(),
        split_sizes={name: len(dataset) for name, dataset in ctx.data.splits()},
        data=data_fingerprints(recipe.data),
        command=ctx.command,
        base_commit=getattr(getattr(ctx.prepared.model, "config", None), "_commit_hash", None),
        model_kwargs=labels,
        baseline_text=baseline.render().removeprefix("baseline:").strip() if baseline is not None else None,
    )


def _write_outputs(output_dir: Path, trainer: RecipeTrainer, summary: dict[str, Any], plots: bool) -> None:
    """Plots, then `training_summary.json` last: the summary is what marks the run complete
    (`trainers.rerun`), so it appears only once every other final file is whole (each written atomically)."""
    if plots:
        folder = output_dir / "plots"
        folder.mkdir(exist_ok=True)
        plot_train_loss(trainer.state.log_history, folder / "train_loss.png")
        plot_eval_metrics(
            output_dir / METRICS_JSONL,
            folder / "val_metrics.png",
            headline=summary["best_metric"]["name"],
            best_epoch=summary["best_epoch"],
            stage_steps=sorted(summary["stages_opened_at_step"].values()),
        )
    write_json(output_dir / "training_summary.json", summary)


@contextmanager
def _final_files(ctx: RunContext) -> Iterator[None]:
    """A full disk (or a read-only folder) while `best/`, the plots or the summary are written: one paragraph.

    No summary is written, so the run is not complete; its final checkpoint is, and rerunning the same command
    continues from it (nothing left to train) and writes the final files again.
    """
    try:
        yield
    except UserFacingError:
        raise
    except Exception as exc:
        if not is_write_failure(exc):
            raise
        last = checkpoints.find_resume_checkpoint(ctx.output_dir / CHECKPOINTS, quiet=True).checkpoint
        again = (
            f"rerun the same command: it continues from {Path(last).name} (nothing left to train) and writes "
            "the final files again"
            if last
            else "rerun the same command"
        )
        target = failed_target(exc) or getattr(exc, "filename", None) or ctx.output_dir
        left = "The run is not marked complete (no training_summary.json was written)"
        raise write_failure(exc, target, again, left) from None


def _mean_logged_loss(log_history: list[dict], fallback: float) -> float:
    """Mean training loss over all steps, from the logged windows (each weighted by its number of steps)."""
    total, steps, last = 0.0, 0, 0
    for entry in log_history:
        if "loss" in entry and "step" in entry:
            total += entry["loss"] * (entry["step"] - last)
            steps += entry["step"] - last
            last = entry["step"]
    return total / steps if steps else fallback


def _truncate_metrics_log(path: Path, resume_from: str | None) -> None:
    """Drop records past the step the run starts from (they will be produced again): all of them afresh."""
    if not path.exists():
        return
    if resume_from is None:  # a previous attempt that left no checkpoint
        path.unlink()
        return
    import json

    step = int(Path(resume_from).name.rsplit("-", 1)[-1])
    lines = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= step]
    path.write_text("".join(ln + "\n" for ln in lines))
