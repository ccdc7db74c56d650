"""Resolve a recipe against its model: freeze map, stages, optimizer groups — shared by `--dry-run` and training.

Building the plan and training use the same code, so the dry-run numbers are the ones the run uses.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any

from torch import nn

from trainers.data.mixing import check_mix_labels
from trainers.freezing.priority import apply_prioritized
from trainers.freezing.progressive import GradientGate, StagePlan, install_gates, resolve_stages
from trainers.freezing.report import FreezeReport, build_freeze_report
from trainers.freezing.rules import apply_freeze_rules
from trainers.models.errors import ModelNotAvailableError
from trainers.models.hub import LoadOptions
from trainers.optim.param_groups import GroupPlan, build_param_groups, layer_table
from trainers.recipe.checks import check_data_paths, missing_data_paths
from trainers.recipe.config import Freeze, Recipe
from trainers.recipe.resolved import ResolvedRecipe, resolve_recipe
from trainers.reporting.memory_plan import memory_plan
from trainers.tasks.interface import Task
from trainers.zero3 import param_numel, unpartitioned_loading, zero3_enabled

logger = logging.getLogger(__name__)


@dataclass
class PreparedModel:
    """A model with freezing, stage gates and the optimizer groups that go with them."""

    model: nn.Module
    processor: Any
    source: str
    freeze: FreezeReport
    stages: list[StagePlan]
    gates: list[GradientGate]
    groups: list[GroupPlan]
    lora: Any = None  # trainers.lora.LoraPlan when the recipe has a `lora` section
    attention: Any = None  # trainers.models.attention.AttentionChoice: what attention runs where
    checkpointing: Any = None  # trainers.models.checkpointing.CheckpointingPlan when it is on

    @property
    def core(self) -> nn.Module:
        """The model whose parameter names the plan uses (inside a peft wrapper: the original model)."""
        from trainers.lora.names import unwrap_peft

        return unwrap_peft(self.model) if self.lora is not None else self.model

    def count_trainable(self) -> int:
        """Parameters that train right now (gated stage parameters count once their gate opens)."""
        gated = {
            n
            for plan, gate in zip(self.stages, self.gates, strict=True)
            if not gate.is_open
            for n in plan.param_names
        }
        return sum(
            param_numel(p) for n, p in self.core.named_parameters() if p.requires_grad and n not in gated
        )


def best_metric(recipe: Recipe, task: Task) -> tuple[str, bool]:
    """(metric name, greater is better) for the kept best checkpoint: early stopping's, else the task's."""
    if recipe.early_stopping is not None:
        return recipe.early_stopping.metric_name, recipe.early_stopping.mode == "max"
    return task.best_metric(recipe.evaluation)


def load_options(recipe: Recipe, quantized: bool = True) -> LoadOptions:
    """The recipe's `model` section as options of the generic loader (`trainers.models.hub`).

    With `model.quantization` the modules that train fully (`lora.modules_to_save`, the targets of `Unfreeze`
    rules and stages) stay in full precision. `quantized=False`: the same base unquantized (merged export).
    """
    m = recipe.model
    quantization = None
    if quantized and m.quantization is not None:
        from trainers.lora.quantize import Quantization

        quantization = Quantization(m.quantization, keep_full_precision=_trained_fully(recipe))
    return LoadOptions(
        dtype=m.dtype, revision=m.revision, quantization=quantization, trust_remote_code=m.trust_remote_code
    )


def _trained_fully(recipe: Recipe) -> tuple[str, ...]:
    """Module paths the recipe trains fully on top of LoRA (layer slices dropped: their parent list is kept)."""
    names = list(recipe.lora.modules_to_save) if recipe.lora is not None else []
    names += [r.target for r in recipe.freeze if r.requires_grad and r.target not in (None, "*")]
    names += [t for stage in recipe.stages for t in stage.targets()]
    return tuple(dict.fromkeys(n.split("[", 1)[0] for n in names))


def load_model(recipe: Recipe | ResolvedRecipe, meta_ok: bool = False) -> tuple[nn.Module, Any, str]:
    """(model, processor, source). `meta_ok`: a dry-run may fall back to the known architecture on meta.

    The data paths are checked first, so a missing folder never costs a download; a dry-run only warns
    (the plan then says so), since recipes are often inspected before their data exists. The task adds
    what the data decides about the model (a classifier's labels).
    """
    resolved = resolve_recipe(recipe)
    recipe, task, family = resolved.recipe, resolved.task, resolved.family
    check_data_paths(resolved, warn_only=meta_ok)
    family.check_serves(task.name)
    check_mix_labels(task, recipe)  # a mixed training split: one label set, every source readable
    kwargs = task.model_kwargs(recipe)
    if recipe.model.use_demo_model:
        # Built whole, with any ZeRO-3 config out of sight: a model whose constructor builds its towers through
        # `_from_config` (Qwen2-VL's vision tower, Idefics3's, PaliGemma's) would otherwise enter `zero.Init`
        # for them and fail initialising the empty shards.
        with unpartitioned_loading():
            model, processor = family.build_tiny()(recipe.model.demo, seed=recipe.training.seed, **kwargs)
        source = f"demo: tiny random-init {type(model).__name__} ({type(recipe.model.demo).__name__})"
        # Through the real loader when loading does something: bitsandbytes quantizes on load, and under
        # ZeRO-3 from_pretrained partitions. The tiny model itself is built whole, so its random init is the
        # same under every launcher.
        if recipe.model.quantization is not None:
            model, processor = _reload_through_loader(family, model, processor, recipe, kwargs)
            source += f", loaded {recipe.model.quantization}"
        elif zero3_enabled():
            model, processor = _reload_through_loader(family, model, processor, recipe, kwargs)
            source += ", loaded partitioned (ZeRO-3)"
        return model, processor, source
    try:
        model, processor = family.load()(recipe.model.id, load_options(recipe), **kwargs)
        return model, processor, f"pretrained: {recipe.model.id}"
    except ModelNotAvailableError:
        if not meta_ok:
            raise
        model = family.meta_model(recipe.model.id, **kwargs)
        if model is None:
            raise
        logger.warning(
            "%s is not available locally; counting its known architecture on the meta device", recipe.model.id
        )
        return (
            model,
            None,
            f"architecture only (meta device): {recipe.model.id} weights are not available locally",
        )


def _reload_through_loader(
    family: Any, model: nn.Module, processor: Any, recipe: Recipe, kwargs: dict[str, Any]
) -> tuple[nn.Module, Any]:
    """The tiny model saved and loaded back through the family's loader with the recipe's load options."""
    import tempfile

    import torch
    from safetensors.torch import save_model

    # fork_rng: what loading draws (weights it initialises, zero.Init) must not shift what comes after it (LoRA
    # init), or a reloaded run would start unlike a 1-process one from the same seed.
    with tempfile.TemporaryDirectory(prefix="tiny-model-") as directory, torch.random.fork_rng(devices=[]):
        # Every rank writes its own copy: `save_pretrained` writes on rank 0 only once a process group exists.
        model.config.save_pretrained(directory)
        save_model(model, f"{directory}/model.safetensors", metadata={"format": "pt"})  # tied tensors once
        processor.save_pretrained(directory)
        return family.load()(directory, load_options(recipe), **kwargs)


def prepare_model(
    model: nn.Module, processor: Any, source: str, recipe: Recipe | ResolvedRecipe, strict: bool = True
) -> PreparedModel:
    """Attention → freeze rules → LoRA → gradient checkpointing → stage gates → optimizer groups, in that
    order (groups depend on all). `strict=False` (dry-run): an attention choice this machine cannot run
    (flash-attn missing) is reported in the plan instead of raised.

    With a `lora` section the base starts frozen (an implicit `freeze *` first rule), the rules then address
    the original model's paths, and `apply_lora` wraps it (see `trainers.lora.apply`). Gates, groups and the
    report work on the original model inside the wrapper, so names and param-group regexes stay unprefixed.
    """
    # The family's own freeze settings (prioritized, e.g. the dual encoder's encoder_configs.text.freeze_*)
    # go through the same engine, before the task's and the recipe's rules.
    from trainers.models import attention, checkpointing

    resolved = resolve_recipe(recipe)
    recipe = resolved.recipe
    attention_choice = attention.set_attention(model, recipe.model.attn_implementation, strict=strict)
    settings = apply_prioritized(model, resolved.family.settings_freeze_rules(model, recipe))
    task_rules = resolved.task.freeze_rules(recipe)  # e.g. detection's data.backbone policy
    implicit = [Freeze("*")] if recipe.lora is not None else []
    rules = [*implicit, *(rule for rule, _ in task_rules), *recipe.freeze]
    effects = apply_freeze_rules(model, rules)
    if recipe.lora is not None:
        effects[0] = replace(effects[0], rule="freeze * (implicit with lora: the base starts frozen)")
    for i, (_, origin) in enumerate(task_rules, start=len(implicit)):
        effects[i] = replace(effects[i], rule=f"{effects[i].rule} (from {origin})")
    effects = [*settings, *effects]
    es = recipe.early_stopping
    stages = resolve_stages(model, recipe.stages, es.patience if es is not None else None)
    wrapped, lora_plan = model, None
    if recipe.model.quantization is not None:
        from trainers.lora.quantize import prepare_quantized

        model = prepare_quantized(model)  # peft's prepare_model_for_kbit_training: base frozen, norms in fp32
    if recipe.lora is not None:
        from trainers.lora import apply_lora, unwrap_peft

        wrapped, lora_plan = apply_lora(model, recipe.lora, stages)
        model = unwrap_peft(wrapped)
    # After peft: a model already checkpointing makes peft hook the input embeddings to require grad (what the
    # reentrant variant needs), and BLIP's text embeddings then fail on an in-place add to that leaf.
    checkpoints = checkpointing.enable(model) if recipe.training.gradient_checkpointing else None
    gates = install_gates(model, stages)
    family = resolved.family
    groups = build_param_groups(
        model, recipe.param_groups, recipe.training, stages, layout=family.layers, family=family.name
    )
    scheduled = {n for plan in stages for n in plan.param_names}
    report = build_freeze_report(
        model, effects, scheduled=scheduled, towers=tuple(family.towers), tower_of=family.tower_of
    )
    return PreparedModel(
        wrapped, processor, source, report, stages, gates, groups, lora_plan, attention_choice, checkpoints
    )


@dataclass
class RunPlan:
    """Everything `--dry-run` prints, also saved as `plan.json` by a run."""

    recipe: str
    model_id: str
    model_source: str
    output_dir: str
    freeze: FreezeReport
    stages: list[StagePlan]
    groups: list[GroupPlan]
    training: dict[str, Any]
    launcher_command: list[str] | None = None
    overrides: list[str] = field(default_factory=list)
    lora: Any = None
    data_missing: list[str] = field(default_factory=list)
    baseline: Any = (
        None  # the task's no-model baseline (captioning: the constant caption), .render() / .to_dict()
    )
    memory: Any = None  # trainers.reporting.memory_plan.MemoryPlan: model state per device by ZeRO stage
    label_set: str | None = None  # the data that names the labels is missing: what was planned with instead
    attention: Any = None  # trainers.models.attention.AttentionChoice
    checkpointing: Any = None  # trainers.models.checkpointing.CheckpointingPlan, None when off

    def to_dict(self) -> dict[str, Any]:
        return {
            "recipe": self.recipe,
            "model_id": self.model_id,
            "model_source": self.model_source,
            "output_dir": self.output_dir,
            "freeze": self.freeze.to_dict(),
            "stages": [s.to_dict() for s in self.stages],
            "param_groups": [g.to_dict() for g in self.groups],
            "layer_decay": [row.to_dict() for row in layer_table(self.groups)],
            "training": self.training,
            "launcher_command": self.launcher_command,
            "overrides": self.overrides,
            "lora": self.lora.to_dict() if self.lora is not None else None,
            "data_missing": self.data_missing,
            "baseline": self.baseline.to_dict() if self.baseline is not None else None,
            "memory": self.memory.to_dict() if self.memory is not None else None,
            "label_set": self.label_set,
            "attention": self.attention.to_dict() if self.attention is not None else None,
            "gradient_checkpointing": self.checkpointing.to_dict()
            if self.checkpointing is not None
            else None,
        }

    def render(self) -> str:
        f = self.freeze
        lines = [
            f"recipe:        {self.recipe}",
            f"model:         {self.model_id}",
            f"source:        {self.model_source}",
            f"output dir:    {self.output_dir}",
            f"overrides:     {' '.join(self.overrides) or '(none)'}",
            *(
                [
                    f"WARNING: data not found, a run would stop before loading the model: {'; '.join(self.data_missing)}"
                ]
                if self.data_missing
                else []
            ),
            *([f"label set:     {self.label_set}"] if self.label_set else []),
            "",
            "freeze map (unique parameters; 'scheduled' = unfrozen by a later stage):",
            _indent(f.render()),
            f"trainable now: {f.trainable:,} / {f.total:,} ({100 * f.trainable_ratio:.2f}%)"
            + (f"; +{f.scheduled:,} scheduled by stages" if f.scheduled else ""),
            "",
        ]
        if f.towers:
            lines += ["towers (the family's named parts, by parameter-name prefix):"]
            lines += [_indent(f.render_towers())]
        if self.lora is not None:
            lines += ["", self.lora.render()]
        lines += ["", "unfreezing stages:" if self.stages else "unfreezing stages: (none)"]
        for s in self.stages:
            lr = f", lr x{s.lr_mult}" if s.lr_mult is not None else ""
            lr += f", LR ramps 0 -> rate over {s.warmup_steps} steps" if s.warmup_steps else ""
            lines.append(
                f"  stage {s.index}: opens at {_trigger_text(s)}: unfreeze {', '.join(s.targets)}"
                f" -> {len(s.param_names)} tensors, {s.num_params:,} params{lr}, optimizer groups {s.group_indices}"
            )
        lines += ["", "optimizer param groups:"]
        for i, g in enumerate(self.groups):
            stage = f"  (gated until stage {g.stage})" if g.stage is not None else ""
            lines.append(
                f"  [{i}] {g.name:<32} lr={g.lr:.3g}  weight_decay={g.weight_decay:g}  "
                f"tensors={len(g.param_names)}  params={g.num_params:,}{stage}"
            )
        table = layer_table(self.groups)
        if table:
            lines += ["", "layer-wise lr decay (layer i of depth at lr * decay ** (depth - i)):"]
            lines.append(f"  {'group':<20} {'layers':<52} {'lr':>9}  params")
            for row in table:
                group = row.group + (f"/stage{row.stage}" if row.stage is not None else "")
                lines.append(f"  {group:<20} {row.layers:<52} {row.lr:>9.3g}  {row.params:,}")
        lines += ["", "training:"]
        lines += [f"  {k}: {v}" for k, v in self.training.items()]
        if self.attention is not None:
            lines.append(f"  {self.attention.render()}")
        lines.append(
            f"  {self.checkpointing.render() if self.checkpointing else 'gradient checkpointing: off'}"
        )
        if self.baseline is not None:
            lines += ["", self.baseline.render()]
        if self.memory is not None:
            lines += ["", self.memory.render()]
        lines += [
            "",
            f"launcher: {' '.join(self.launcher_command) if self.launcher_command else 'in-process'}",
        ]
        return "\n".join(lines)


def build_run_plan(
    recipe: Recipe | ResolvedRecipe,
    prepared: PreparedModel,
    launcher_command: list[str] | None = None,
    overrides: list[str] | None = None,
) -> RunPlan:
    resolved = resolve_recipe(recipe)
    recipe, task = resolved.recipe, resolved.task
    best = best_metric(recipe, task)
    t = recipe.training
    training = {
        "epochs": t.epochs,
        "per_device_batch_size": t.batch_size,
        "grad_accum": t.grad_accum,
        "processes": recipe.launch.nproc * recipe.launch.nnodes,
        "global_batch_size": t.batch_size * t.grad_accum * recipe.launch.nproc * recipe.launch.nnodes,
        "lr": t.lr,
        "lr_scheduler": t.lr_scheduler,
        "warmup_steps": t.warmup_steps,
        "weight_decay": t.weight_decay,
        "layer_decay": t.layer_decay,
        "max_grad_norm": t.max_grad_norm,
        "optim": t.optim,
        "best_metric": f"{best[0]} ({'max' if best[1] else 'min'})",
        "early_stopping": (
            f"{recipe.early_stopping.metric_name} ({recipe.early_stopping.mode}), patience {recipe.early_stopping.patience}"
            if recipe.early_stopping
            else "off"
        ),
    }
    return RunPlan(
        recipe=recipe.name,
        model_id=recipe.model.id,
        model_source=prepared.source,
        output_dir=recipe.resolved_output_dir(),
        freeze=prepared.freeze,
        stages=prepared.stages,
        groups=prepared.groups,
        training=training,
        launcher_command=launcher_command,
        overrides=list(overrides or []),
        lora=prepared.lora,
        data_missing=missing_data_paths(resolved),
        baseline=task.plan_baseline(recipe),
        memory=memory_plan(recipe, prepared),
        label_set=_label_set_note(resolved),
        attention=prepared.attention,
        checkpointing=prepared.checkpointing,
    )


def _label_set_note(resolved: ResolvedRecipe) -> str | None:
    """The task's stand-in sentence, and which counts depend on the label set (the family's head tower's)."""
    note = resolved.task.label_set_stand_in(resolved.recipe)
    if note is None:
        return None
    head = ", ".join(p.rstrip(".") for p in resolved.family.towers.get("head", ())) or "the output layer"
    return (
        f"{note} Counts that depend on the label set: the head's ({head}), and with them the totals and "
        "trainable counts; the freeze rules, LoRA targets, stages and groups do not."
    )


def _indent(text: str, prefix: str = "  ") -> str:
    return "\n".join(prefix + line for line in text.splitlines())


def _trigger_text(stage: StagePlan) -> str:
    """The stage's trigger as the plan reads it."""
    if stage.on_plateau:
        return (
            f"plateau: {stage.patience} evaluations without improvement of the early-stopping metric "
            "(once the stages above are open)"
        )
    if stage.step is not None:
        return f"step {stage.step} (after {stage.step} optimizer steps)"
    return f"epoch {stage.epoch} (after {stage.epoch} epochs)"
