"""The typed configuration a recipe file builds.

A recipe is declarative: which model, which data, what is frozen and when it thaws, which parameters
get which learning rate, how training runs and when it stops. Everything a user may change from the
command line is a plain field here, reachable by a dotted `key=value` override.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from trainers.errors import RecipeError

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------- model


@dataclass
class Model:
    """What to fine-tune.

    `id` is a Hugging Face hub id or a local directory; `family` names the registry entry
    (`trainers.models.registry`) that turns it into (model, processor) and says which tasks it serves.
    `demo` is the family's tiny-model spec used by `--demo` (random init, built offline from a config class).
    `revision` is a hub branch, tag or commit. `trust_remote_code` lets a checkpoint that ships its own
    Python code run it: off unless the recipe says so. `quantization` loads the base in 4-bit NF4 or 8-bit
    through bitsandbytes (QLoRA: needs a `lora` section; the heads it trains stay in full precision).
    `attn_implementation` picks the attention kernels (`eager`, `sdpa`, `flash_attention_2`) in every part of
    the model whose transformers class implements them; None keeps transformers' default
    (`trainers.models.attention`).
    """

    id: str
    family: str
    demo: Any = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "float32"
    use_demo_model: bool = False
    revision: str | None = None
    trust_remote_code: bool = False
    quantization: Literal["4bit", "8bit"] | None = None
    attn_implementation: Literal["eager", "sdpa", "flash_attention_2"] | None = None


# ---------------------------------------------------------------------------------------------- data
# Each task keeps its data and evaluation dataclasses in its own folder (`trainers/tasks/<task>/config.py`);
# a data class names its task (`task`) and its evaluation settings class (`eval_config`).


# ------------------------------------------------------------------------------------------ freezing


@dataclass(frozen=True)
class Freeze:
    """Stop training the parameters a target selects.

    A target is a module path (`vision_model`), optionally indexed or sliced where the module is a
    list of layers (`vision_model.encoder.layers[:6]` = the first six), `*` for the whole model, or
    `regex=` searched in parameter names. Rules apply in order; later rules win. `within` (a module path)
    scopes a regex to one tower: it is then searched in the names relative to that module
    (`Freeze(regex="^encoder[.]layer[.]0[.]", within="text_model")`).
    """

    target: str | None = None
    regex: str | None = None
    within: str | None = None

    requires_grad = False

    def __post_init__(self) -> None:
        if (self.target is None) == (self.regex is None):
            raise RecipeError(
                f"{type(self).__name__}(...) needs exactly one of a module path or regex=; got "
                f"target={self.target!r}, regex={self.regex!r}."
            )
        if self.regex is not None:
            _check_regex(self.regex, f"{type(self).__name__}(regex=...)")

    @classmethod
    def first(cls, layers_path: str, n: int) -> Freeze:
        """The first `n` layers of a layer list, e.g. `Freeze.first("vision_model.encoder.layers", 6)`."""
        return cls(f"{layers_path}[:{n}]")

    @classmethod
    def last(cls, layers_path: str, n: int) -> Freeze:
        """The last `n` layers of a layer list."""
        return cls(f"{layers_path}[-{n}:]")

    def describe(self) -> str:
        what = self.target if self.target is not None else f"regex {self.regex!r}"
        if self.within is not None:
            what += f" within {self.within}"
        return f"{type(self).__name__.lower()} {what}"


@dataclass(frozen=True)
class Unfreeze(Freeze):
    """Train the parameters a target selects (same target syntax as `Freeze`)."""

    requires_grad = True


@dataclass(frozen=True)
class Stage:
    """A step of progressive unfreezing: once it opens, `unfreeze` trains too. It opens on one signal:

    - `epoch=N`: at the start of epoch N (0-based);
    - `step=N`: after N optimizer steps;
    - `on_plateau=True`: at the first evaluation where the early-stopping metric has not improved for
      `patience` evaluations (default: the early-stopping patience), counted since the best evaluation or
      the last stage opening, whichever is later (ULMFiT's "thaw the next block when it stalls").

    Stages open in the order listed: a plateau stage waits for every stage above it. While any stage is
    closed, early stopping does not end the run; a stall opens the next plateau stage instead and the count
    restarts. `lr_mult`, when set, is the learning-rate multiplier of the newly unfrozen parameters (their own
    LR rule, as in Lightning's BackboneFinetuning); otherwise they follow the declared param groups.
    `warmup_steps=N` ramps their LR from 0 to that rate over the N steps after the opening (a factor on the
    recipe's scheduler, which keeps running for every group).
    """

    epoch: int | None = None
    unfreeze: tuple[str, ...] | str = ()
    lr_mult: float | None = None
    step: int | None = None
    on_plateau: bool = False
    patience: int | None = None
    warmup_steps: int = 0

    def targets(self) -> tuple[str, ...]:
        return (self.unfreeze,) if isinstance(self.unfreeze, str) else tuple(self.unfreeze)

    def triggers(self) -> list[str]:
        """The opening signals this stage declares, as a recipe spells them (exactly one is valid)."""
        found = [f"epoch={self.epoch}"] if self.epoch is not None else []
        found += [f"step={self.step}"] if self.step is not None else []
        return found + (["on_plateau=True"] if self.on_plateau else [])

    def describe_trigger(self, default_patience: int | None = None) -> str:
        """`epoch 3`, `step 40`, `plateau (patience 2)`: what opens the stage, for the plan."""
        if self.epoch is not None:
            return f"epoch {self.epoch}"
        if self.step is not None:
            return f"step {self.step}"
        return f"plateau (patience {self.patience or default_patience})"


@dataclass(frozen=True)
class ParamGroup:
    """Declared optimizer group: parameters whose name matches `match` (regex, searched) get
    `lr = training.lr * lr_mult`. First matching group wins; unmatched parameters use the defaults.
    Bias and LayerNorm parameters never get weight decay. `layer_decay` (in (0, 1]; default
    `training.layer_decay`) scales layer i of a tower by `layer_decay ** (depth - i)` on top, the layers
    being those the model family declares (`trainers.optim.layer_decay`).
    """

    name: str
    match: str
    lr_mult: float = 1.0
    weight_decay: float | None = None
    layer_decay: float | None = None

    def __post_init__(self) -> None:
        _check_regex(self.match, f"ParamGroup({self.name!r}).match")
        if self.lr_mult < 0:
            raise RecipeError(f"ParamGroup({self.name!r}).lr_mult must be >= 0, got {self.lr_mult}.")
        check_decay(self.layer_decay, f"ParamGroup({self.name!r}).layer_decay")


# ---------------------------------------------------------------------------------------------- lora


@dataclass
class Lora:
    """LoRA adapters (peft `LoraConfig`) on top of the frozen base model.

    `target_modules` are module names as peft reads them: `query` matches every module whose path ends
    in `.query` (in every tower: the plan groups the matches by top-level module so you can see that);
    `target_regex` instead is matched against the full module path (peft's regex form); set one of the two.
    Matched modules inside a `modules_to_save` module are left to it (they train fully). `alpha` defaults
    to 2*r. `modules_to_save` are modules trained fully and saved with the adapter. With LoRA on, the base
    starts frozen: `Unfreeze(...)` rules and stages name base modules that train fully on top of the
    adapters (they are saved with the adapter as peft `modules_to_save`). `tied_weights` says what happens
    when a target or a saved module shares a tensor with another module (an LM head tied to the word
    embedding): "untie" gives it its own copy (the model config then says tie_word_embeddings=false),
    "refuse" stops with an explanation. `save_merged` also writes the merged full model (`merged/`).
    """

    target_modules: tuple[str, ...] = ()
    target_regex: str | None = None
    r: int = 8
    alpha: float | None = None
    dropout: float = 0.0
    bias: Literal["none", "all", "lora_only"] = "none"
    use_dora: bool = False
    modules_to_save: tuple[str, ...] = ()
    tied_weights: Literal["untie", "refuse"] = "untie"
    save_merged: bool = False

    @property
    def lora_alpha(self) -> float:
        return float(2 * self.r) if self.alpha is None else float(self.alpha)

    def validate(self) -> None:
        if self.r < 1:
            raise RecipeError(f"lora.r must be >= 1, got {self.r}.")
        if self.alpha is not None and self.alpha <= 0:
            raise RecipeError(f"lora.alpha must be > 0, got {self.alpha}.")
        if not 0.0 <= self.dropout < 1.0:
            raise RecipeError(f"lora.dropout must be in [0, 1), got {self.dropout}.")
        if self.target_regex is not None and self.target_modules:
            raise RecipeError(
                f"lora sets both target_modules {list(self.target_modules)} and target_regex {self.target_regex!r}; "
                "set one (override the other with =none, e.g. lora.target_regex=none)."
            )
        if self.target_regex is not None:
            _check_regex(self.target_regex, "lora.target_regex")
        elif not self.target_modules:
            raise RecipeError("lora needs target_modules (e.g. query,value) or target_regex.")


# ------------------------------------------------------------------------------------------ training


@dataclass
class Training:
    """Optimisation settings, mapped onto `transformers.TrainingArguments`."""

    epochs: int = 3
    batch_size: int = 8
    eval_batch_size: int | None = None
    grad_accum: int = 1
    lr: float = 3e-5
    lr_scheduler: str = "linear"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    # Layer-wise LR decay for every parameter of a tower the family lays out: layer i of depth trains at
    # lr * layer_decay ** (depth - i), embeddings lowest, heads at lr (`ParamGroup.layer_decay` overrides it).
    layer_decay: float | None = None
    max_grad_norm: float = 1.0
    optim: str = "adamw_torch"
    seed: int = 42
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    # DataLoader workers per rank: "auto" = on a GPU a few (cores per rank - 1, at most 4), without one 0;
    # persistent, pinned memory on CUDA (`trainers.data.loader`); 0 loads between steps in the training process.
    num_workers: int | Literal["auto"] = "auto"
    # Recompute each layer's activations in backward instead of keeping them (non-reentrant; see
    # trainers.models.checkpointing): less activation memory for about one more forward per step.
    gradient_checkpointing: bool = False
    logging_steps: int = 10
    # Evaluate once before the first step (epoch 0): the summary, metrics.jsonl, the plot and W&B then show where
    # the run started. It leaves training exactly as without it (the random state is put back), is not run again
    # on resume, and no early-stopping, plateau or overfitting decision counts it.
    eval_on_start: bool = True
    max_steps: int = -1
    save_total_limit: int = 2
    save_steps: int | None = None  # also checkpoint every N steps inside an epoch (resume loses <= N steps)
    # What a rerun does with an output dir holding a run (`trainers.rerun`): "auto" continues it when only
    # continuable settings changed and stops otherwise; "never" moves it to previous-<n>/ and starts over;
    # "force" continues from its checkpoint whatever changed; "overwrite" deletes it and starts over.
    resume: Literal["auto", "never", "force", "overwrite"] = "auto"


@dataclass(frozen=True)
class CompositeMetric:
    """A metric made of others, computed after evaluation (e.g. the mean of METEOR, ROUGE-L, CIDEr-D)."""

    name: str
    parts: tuple[str, ...]
    reduce: Literal["mean"] = "mean"

    def compute(self, metrics: dict[str, float]) -> float:
        missing = [p for p in self.parts if p not in metrics]
        if missing:
            raise RecipeError(
                f"Composite metric {self.name!r} needs {missing}, but evaluation produced only "
                f"{sorted(metrics)}. Fix early_stopping.metric or evaluation.metrics in the recipe."
            )
        return math.fsum(metrics[p] for p in self.parts) / len(self.parts)


def mean(*parts: str, name: str = "val_score") -> CompositeMetric:
    """`mean("meteor", "rouge_l", "cider_d")`: the composite score early stopping watches."""
    if not parts:
        raise RecipeError("mean(...) needs at least one metric name.")
    return CompositeMetric(name=name, parts=tuple(parts))


@dataclass
class EarlyStopping:
    """Stop when `metric` has not improved by more than `min_delta` for `patience` evaluations.

    The best checkpoint (by the same metric) is kept and loaded back at the end.
    """

    metric: str | CompositeMetric = "eval_loss"
    patience: int = 5
    mode: Literal["max", "min"] = "max"
    min_delta: float = 0.0

    @property
    def metric_name(self) -> str:
        return self.metric.name if isinstance(self.metric, CompositeMetric) else self.metric


# ------------------------------------------------------------------------------------ run & launch


@dataclass
class Reporting:
    """Where results go. W&B runs offline unless the user is logged in (`auto`), and never needs an account.

    `wandb_group` defaults to the Slurm array (every task of one sweep in one group), else the recipe's name;
    the launcher, the ZeRO stage and the Slurm job are added to `wandb_tags`.
    """

    wandb: bool = True
    wandb_mode: Literal["auto", "offline", "online", "disabled"] = "auto"
    wandb_project: str = "vlm-finetune"
    wandb_group: str | None = None
    wandb_job_type: str = "train"
    wandb_tags: tuple[str, ...] = ()
    run_name: str | None = None
    plots: bool = True


@dataclass
class Launch:
    """How worker processes are started (`--launcher` and friends on the command line)."""

    launcher: Literal["none", "accelerate", "torchrun", "deepspeed", "slurm"] = "none"
    nproc: int = 1
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int | None = None  # None: a free port on one node, 29500 across nodes
    zero: int | None = None
    offload: bool = False
    deepspeed_config: str | None = None
    # "auto": DDP, or DeepSpeed when zero / deepspeed_config is set; "fsdp": FSDP2 full-shard through
    # accelerate (`trainers.fsdp`: frozen towers and LoRA, checkpoints, best-model reload; no stages, no QLoRA).
    engine: Literal["auto", "fsdp"] = "auto"


@dataclass
class Slurm:
    """The batch job `--launcher slurm` renders and submits (see `slurm/` for the script it is built from).

    One launcher per node (`srun` then `torchrun`); processes per node are `gpus_per_node`, or
    `launch.nproc` on a CPU-only job. `signal_lead` seconds before the time limit Slurm sends USR1: the
    trainers checkpoint at the next step and the job requeues itself and resumes.
    """

    partition: str | None = None
    time: str = "01:00:00"
    nodes: int = 1
    gpus_per_node: int = 0
    cpus_per_task: int | None = None
    mem: str | None = None
    account: str | None = None
    qos: str | None = None
    job_name: str | None = None
    signal_lead: int = 120
    requeue: bool = True
    setup: str | None = None
    extra: tuple[str, ...] = ()


# ------------------------------------------------------------------------------------------- recipe


@dataclass
class Recipe:
    """One fine-tuning run, declared top to bottom."""

    name: str
    model: Model
    data: Any  # a task's data class, e.g. CaptionData, ClassificationData
    freeze: list[Freeze] = field(default_factory=list)
    stages: list[Stage] = field(default_factory=list)
    param_groups: list[ParamGroup] = field(default_factory=list)
    training: Training = field(default_factory=Training)
    evaluation: Any = (
        None  # the task's evaluation settings (its data class's `eval_config`); None: its defaults
    )
    early_stopping: EarlyStopping | None = None
    lora: Lora | None = None
    reporting: Reporting = field(default_factory=Reporting)
    launch: Launch = field(default_factory=Launch)
    slurm: Slurm = field(default_factory=Slurm)
    # Per-tower settings a family reads (the dual encoder's `EncoderConfigs`: `encoder_configs.text.*`).
    encoder_configs: Any = None
    # A YAML file of `key: value` settings applied after the recipe (and `--demo`), before command-line
    # overrides; `--config FILE` (the `config=FILE` override) replaces it, `config=none` skips it.
    config: str | None = None
    output_dir: str = "outputs/{name}"
    demo: dict[str, Any] = field(default_factory=dict)
    callbacks: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.evaluation is None:
            eval_config = getattr(type(self.data), "eval_config", None)
            if eval_config is not None:
                self.evaluation = eval_config()

    def resolved_output_dir(self) -> str:
        return self.output_dir.format(name=self.name)

    def validate(self) -> None:
        """Checks that need no model: contradictions and out-of-range values."""
        t = self.training
        positive = {
            "training.epochs": t.epochs,
            "training.batch_size": t.batch_size,
            "training.grad_accum": t.grad_accum,
        }
        for key, value in positive.items():
            if value < 1:
                raise RecipeError(f"{key} must be >= 1, got {value}.")
        if t.lr <= 0:
            raise RecipeError(f"training.lr must be > 0, got {t.lr}.")
        if t.save_steps is not None and t.save_steps < 1:
            raise RecipeError(f"training.save_steps must be >= 1 or none, got {t.save_steps}.")
        if t.num_workers != "auto" and (
            isinstance(t.num_workers, bool) or not isinstance(t.num_workers, int) or t.num_workers < 0
        ):
            raise RecipeError(
                f"training.num_workers={t.num_workers!r}: give a number of loader processes per rank (>= 0; "
                '0 loads in the training process) or "auto" (a few per rank, the default).'
            )
        for key in ("warmup_steps", "weight_decay", "max_grad_norm"):
            if getattr(t, key) < 0:
                raise RecipeError(f"training.{key} must be >= 0, got {getattr(t, key)}.")
        self._validate_stages()
        check_decay(t.layer_decay, "training.layer_decay")
        for i, group in enumerate(self.param_groups):
            check_decay(group.layer_decay, f"param_groups.{i}.layer_decay ({group.name!r})")
        names = [g.name for g in self.param_groups]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise RecipeError(f"param_groups names must be unique; repeated: {duplicates}.")
        if hasattr(self.encoder_configs, "validate"):
            self.encoder_configs.validate()
        if hasattr(self.data, "validate"):
            self.data.validate()  # the task's own data checks (augmentation settings, ...)
        eval_config = getattr(type(self.data), "eval_config", None)
        if eval_config is not None and not isinstance(self.evaluation, eval_config):
            raise RecipeError(
                f"evaluation: the recipe's data ({type(self.data).__name__}) is evaluated with "
                f"{eval_config.__name__}(...), got {type(self.evaluation).__name__}. Use evaluation="
                f"{eval_config.__name__}(...) or leave it out for the defaults."
            )
        if self.early_stopping is not None:
            self._validate_early_stopping(self.early_stopping)
        if self.lora is not None:
            self.lora.validate()
        if self.slurm.nodes < 1 or self.slurm.gpus_per_node < 0 or self.slurm.signal_lead < 0:
            raise RecipeError(
                f"slurm.nodes must be >= 1, slurm.gpus_per_node and slurm.signal_lead >= 0; got "
                f"{self.slurm.nodes}, {self.slurm.gpus_per_node}, {self.slurm.signal_lead}."
            )
        if self.launch.zero is not None and self.launch.zero not in (1, 2, 3):
            raise RecipeError(f"launch.zero must be 1, 2 or 3, got {self.launch.zero}.")

    def layer_decay_keys(self) -> list[str]:
        """The keys that ask for layer-wise LR decay (a family without a layer layout refuses them)."""
        decay = self.training.layer_decay
        keys = [f"training.layer_decay={decay}"] if decay is not None else []
        return keys + [
            f"param_groups[{g.name!r}].layer_decay={g.layer_decay}"
            for g in self.param_groups
            if g.layer_decay is not None
        ]

    def _validate_stages(self) -> None:
        t = self.training
        for i, stage in enumerate(self.stages):
            triggers = stage.triggers()
            if len(triggers) != 1:
                what = f"{len(triggers)} triggers ({', '.join(triggers)})" if triggers else "no trigger"
                raise RecipeError(
                    f"stages[{i}] has {what}: a stage opens on one signal. Give it exactly one of epoch=N, "
                    "step=N or on_plateau=True."
                )
            if not stage.targets():
                raise RecipeError(f"stages[{i}].unfreeze is empty: name the modules the stage unfreezes.")
            if stage.epoch is not None and stage.epoch < 1:
                raise RecipeError(
                    f"stages[{i}].epoch={stage.epoch}: a stage starts at epoch 1 or later (0-based); "
                    "what trains from epoch 0 is set by the freeze rules."
                )
            if stage.step is not None and stage.step < 1:
                raise RecipeError(
                    f"stages[{i}].step={stage.step}: a stage opens after step 1 or later; "
                    "what trains from the start is set by the freeze rules."
                )
            if stage.epoch is not None and stage.epoch >= t.epochs:
                logger.warning(
                    "stages[%d] (epoch %d) is never reached in a run of training.epochs=%d",
                    i,
                    stage.epoch,
                    t.epochs,
                )
            if stage.patience is not None and (not stage.on_plateau or stage.patience < 1):
                raise RecipeError(
                    f"stages[{i}].patience={stage.patience}: patience counts the evaluations without "
                    "improvement that open an on_plateau=True stage; it must be >= 1 and goes only with "
                    "on_plateau=True."
                )
            if stage.on_plateau and self.early_stopping is None:
                raise RecipeError(
                    f"stages[{i}].on_plateau=True opens the stage when the early-stopping metric stops "
                    "improving, but the recipe has no early_stopping, so no evaluation metric is watched. Add "
                    "early_stopping=EarlyStopping(metric=..., patience=...) naming an evaluation metric, or "
                    "give the stage epoch=N or step=N instead."
                )
            if stage.warmup_steps < 0:
                raise RecipeError(f"stages[{i}].warmup_steps must be >= 0, got {stage.warmup_steps}.")
            if stage.lr_mult is not None and stage.lr_mult < 0:
                raise RecipeError(f"stages[{i}].lr_mult must be >= 0, got {stage.lr_mult}.")
        for kind in ("epoch", "step"):
            values = [getattr(s, kind) for s in self.stages if getattr(s, kind) is not None]
            if values != sorted(set(values)):
                raise RecipeError(f"stages must have increasing, distinct {kind}s; got {values}.")

    def _validate_early_stopping(self, es: EarlyStopping) -> None:
        # Metric names are checked against the task's list at load (`trainers.recipe.checks.check_metric_names`).
        if es.patience < 1:
            raise RecipeError(f"early_stopping.patience must be >= 1, got {es.patience}.")


def to_dict(obj: Any) -> Any:
    """A JSON-ready view of a recipe (callbacks and specs shown by their repr)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        if isinstance(obj, Freeze):
            out = {"rule": type(obj).__name__, **out}
        return out
    if isinstance(obj, dict):
        return {str(k): to_dict(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_dict(v) for v in obj]
    if obj is None or isinstance(obj, str | int | float | bool):
        return obj
    return repr(obj)


def check_decay(value: float | None, key: str) -> None:
    """`layer_decay` is a factor in (0, 1]: 1 is a flat rate, 0 would freeze the embeddings."""
    if value is not None and not 0.0 < value <= 1.0:
        raise RecipeError(
            f"{key}={value}: layer_decay must be in (0, 1] (layer i trains at lr * layer_decay ** (depth - i); "
            "1 keeps every layer at the same rate; BEiT fine-tunes ViT-B with 0.65, MAE with 0.75). Set a value in (0, 1] or "
            "none to switch it off."
        )


def _check_regex(pattern: str, where: str) -> None:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise RecipeError(f"{where}: {pattern!r} is not a valid regular expression ({exc}).") from None
