"""A DeepSpeed config judged by DeepSpeed itself, before any process starts.

The config is filled the way the Trainer will fill it (transformers' `HfTrainerDeepSpeedConfig`: batch
sizes, clipping, precision, optimizer and scheduler values from the recipe; the hidden-size based bucket
sizes from a stand-in hidden size, since no model is loaded yet) and then parsed by DeepSpeed's own
`DeepSpeedConfig` (its pydantic sections: ZeRO, offload, ...). What either of them rejects (a pinned value
that disagrees with the recipe, `"allgather_bucket_size": "big"`, an offload device of "gpu", no batch-size
keys at all) would otherwise stop every rank with a traceback after the model is loaded; here it becomes one
paragraph naming the file, the key (and its line) and DeepSpeed's complaint. Imports transformers and
DeepSpeed: called only for runs that use DeepSpeed.
"""

from __future__ import annotations

import copy
import types
from pathlib import Path
from typing import Any

from trainers.errors import RecipeError
from trainers.recipe.config import Training

HIDDEN_SIZE_STAND_IN = 1024  # fills the "auto" bucket sizes; any positive size gives the same verdict
TRAINING_STEPS_STAND_IN = 1000  # fills the scheduler's "auto" step counts

# A recipe key (or what to do) for each TrainingArguments value the Trainer matches against the config.
RECIPE_KEYS = {
    "per_device_train_batch_size": "training.batch_size",
    "gradient_accumulation_steps": "training.grad_accum",
    "train_batch_size (calculated)": "training.batch_size x training.grad_accum x processes",
    "max_grad_norm": "training.max_grad_norm",
    "learning_rate": "training.lr",
    "weight_decay": "training.weight_decay",
    "adam_beta1+adam_beta2": "the Trainer's AdamW betas",
    "adam_epsilon": "the Trainer's AdamW epsilon",
    "fp16|fp16_full_eval": "training.precision",
    "bf16|bf16_full_eval": "training.precision",
    "num_training_steps (calculated)": "training.epochs / training.max_steps",
    "warmup_steps": "training.warmup_steps",
}

# DeepSpeed's pydantic config sections → where they sit in the file.
SECTIONS = {
    "DeepSpeedZeroConfig": "zero_optimization",
    "DeepSpeedZeroOffloadOptimizerConfig": "zero_optimization.offload_optimizer",
    "DeepSpeedZeroOffloadParamConfig": "zero_optimization.offload_param",
    "DeepSpeedActivationCheckpointingConfig": "activation_checkpointing",
    "DeepSpeedFlopsProfilerConfig": "flops_profiler",
    "CommsConfig": "comms_logger",
    "DeepSpeedMonitorConfig": "",
    "DeepSpeedFP16Config": "fp16",
    "DeepSpeedBF16Config": "bf16",
}

BATCH_FIX = (
    'Add "train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto" and "gradient_accumulation_steps": '
    '"auto" at the top level (the Trainer fills them from training.batch_size and training.grad_accum), as the '
    "shipped ds_configs/*.json do."
)


def judge_filled_config(
    config: dict[str, Any],
    training: Training,
    world_size: int,
    where: str,
    source: Path | None = None,
    precision: str | None = None,
) -> dict[str, Any]:
    """The config as the Trainer fills it, after DeepSpeed's own config classes accepted it; else one
    `RecipeError` paragraph (`where`: "DeepSpeed config FILE"; `source`: the file, for line numbers)."""
    from transformers.integrations import deepspeed as hf_deepspeed

    text = source.read_text(encoding="utf-8") if source is not None else ""
    precision = _precision(training, precision, config)
    args = _trainer_arguments(training, world_size, precision)
    saved = hf_deepspeed._hf_deepspeed_config_weak_ref  # the Trainer's own config object, if one is alive
    try:
        hf = hf_deepspeed.HfTrainerDeepSpeedConfig(copy.deepcopy(config))
        hf.trainer_config_process(args)
        try:
            hf.trainer_config_finalize(args, _ModelStandIn(), TRAINING_STEPS_STAND_IN)
        except ValueError:
            if not hf.mismatches:
                raise
            raise RecipeError(_mismatch_message(hf.mismatches, where, text, precision)) from None
        filled = hf.config
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = saved
    _parse_with_deepspeed(filled, world_size, where, text)
    return filled


def _precision(training: Training, precision: str | None, config: dict[str, Any]) -> str:
    """The run's precision: given, or `training.precision` with "auto" resolved as the run does on this
    machine ("any": accept what the file says, e.g. for a job that starts on other machines)."""
    precision = precision or training.precision
    if precision == "any":
        fp16, bf16 = (_enabled(config.get(k)) for k in ("fp16", "bf16"))
        return "fp16" if fp16 is True else "bf16" if bf16 is True else "fp32"
    if precision != "auto":
        return precision
    import torch

    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"


def _trainer_arguments(training: Training, world_size: int, precision: str) -> Any:
    """The `TrainingArguments` fields `trainer_config_process` / `_finalize` read, as `trainers.run` sets them."""
    args = types.SimpleNamespace(
        world_size=world_size,
        per_device_train_batch_size=training.batch_size,
        gradient_accumulation_steps=training.grad_accum,
        max_grad_norm=training.max_grad_norm,
        learning_rate=training.lr,
        adam_beta1=0.9,  # TrainingArguments' defaults: the recipe does not set them
        adam_beta2=0.999,
        adam_epsilon=1e-8,
        weight_decay=training.weight_decay,
        save_on_each_node=False,
        fp16=precision == "fp16",
        fp16_full_eval=False,
        bf16=precision == "bf16",
        bf16_full_eval=False,
    )
    args.get_warmup_steps = lambda steps: training.warmup_steps
    return args


def _enabled(section: Any) -> Any:
    return section.get("enabled") if isinstance(section, dict) else None


class _ModelStandIn:
    """What `trainer_config_finalize` reads of the model: its hidden size (for "auto" bucket sizes)."""

    config = types.SimpleNamespace(hidden_size=HIDDEN_SIZE_STAND_IN)


def _mismatch_message(mismatches: list[str], where: str, text: str, precision: str) -> str:
    """transformers' "- ds KEY=VALUE vs hf ARG=VALUE" lines, in recipe terms."""
    parts = []
    for line in mismatches:
        ds, _, hf = line.removeprefix("- ds ").partition(" vs hf ")
        key, _, value = ds.partition("=")
        arg, _, wanted = hf.rpartition("=")
        recipe_key = RECIPE_KEYS.get(arg, arg)
        if recipe_key == "training.precision":
            recipe_key = f"training.precision resolves to {precision}"
        parts.append(f"{key}={value}{_at_line(text, key)} but the run uses {wanted} ({recipe_key})")
    return (
        f'{where}: the Trainer would refuse it on every rank: {"; ".join(parts)}. Set these keys to "auto" '
        "(the Trainer fills them from the recipe) or change the recipe to match."
    )


def _parse_with_deepspeed(filled: dict[str, Any], world_size: int, where: str, text: str) -> None:
    """`DeepSpeedConfig(filled)` as this process sees it: DeepSpeed checks train_batch_size against the world
    size of the process group it finds (none before launch: 1; inside a worker: the real one), so a
    train_batch_size filled for `world_size` processes is rescaled to that world."""
    import pydantic
    from deepspeed import comm
    from deepspeed.runtime.config import DeepSpeedConfig

    try:  # what DeepSpeedConfig itself will read
        seen = comm.get_world_size()
    except (RuntimeError, AssertionError, AttributeError):
        seen = 1
    view = copy.deepcopy(filled)
    batch = view.get("train_batch_size")
    if isinstance(batch, int) and world_size != seen and batch % world_size == 0:
        view["train_batch_size"] = batch // world_size * seen
    try:
        DeepSpeedConfig(view)
    except pydantic.ValidationError as exc:
        section = SECTIONS.get(exc.title, exc.title)
        problems = []
        for error in exc.errors():
            key = ".".join(str(p) for p in (section, *error["loc"]) if p != "")
            problems.append(f"{key}={error.get('input')!r}{_at_line(text, key)}: {error['msg']}")
        raise RecipeError(
            f"{where}: DeepSpeed rejects it: {'; '.join(problems)}. Fix that value in the file (DeepSpeed's own "
            "config check, run before any process starts)."
        ) from None
    except (AssertionError, ValueError, TypeError, KeyError, AttributeError) as exc:
        complaint = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        fix = BATCH_FIX if "batch" in complaint.lower() else "Fix the file (DeepSpeed's own config check)."
        raise RecipeError(f"{where}: DeepSpeed rejects it: {complaint}. {fix}") from None


def _at_line(text: str, key: str) -> str:
    """ " (line N)" where the dotted key's last name appears in the file after its parents; "" if not found."""
    position = 0
    for name in key.split("."):
        found = text.find(f'"{name}"', position)
        if found < 0:
            return ""
        position = found
    return f" (line {text.count(chr(10), 0, position) + 1})" if text else ""
