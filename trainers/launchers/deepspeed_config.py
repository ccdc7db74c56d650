"""DeepSpeed configs: `--zero N [--offload]` → a shipped `ds_configs/*.json`, and checks before launch.

DeepSpeed ignores unknown top-level keys silently and reports contradictions late (after model load,
on every rank). Here a config is read and checked once, before any process starts: unknown keys get
the closest valid names, contradictions (offload below its stage, fp16 with bf16, a DeepSpeed optimizer
that would drop the recipe's parameter groups) and values the Trainer fills ("auto") that were pinned
to something else are reported as one clear error. Then `deepspeed_judge` fills the config as the Trainer
will and lets DeepSpeed's own config classes parse it (that imports transformers and DeepSpeed: only for
runs that use DeepSpeed).
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trainers.errors import RecipeError
from trainers.paths import DS_CONFIG_DIR
from trainers.recipe.config import Launch, Training

# Top-level keys DeepSpeed 0.19 reads (deepspeed/runtime/config.py and the feature configs it loads).
TOP_LEVEL_KEYS = frozenset(
    {
        "train_batch_size",
        "train_micro_batch_size_per_gpu",
        "gradient_accumulation_steps",
        "gradient_clipping",
        "steps_per_print",
        "wall_clock_breakdown",
        "memory_breakdown",
        "dump_state",
        "prescale_gradients",
        "gradient_predivide_factor",
        "sparse_gradients",
        "communication_data_type",
        "seq_parallel_communication_data_type",
        "disable_allgather",
        "fp16",
        "bf16",
        "bfloat16",
        "amp",
        "torch_autocast",
        "zero_optimization",
        "zero_allow_untested_optimizer",
        "zero_force_ds_cpu_optimizer",
        "optimizer",
        "scheduler",
        "activation_checkpointing",
        "flops_profiler",
        "comms_logger",
        "monitor_config",
        "tensorboard",
        "wandb",
        "csv_monitor",
        "comet",
        "aio",
        "checkpoint",
        "data_types",
        "compression_training",
        "data_efficiency",
        "curriculum_learning",
        "progressive_layer_drop",
        "eigenvalue",
        "quantize_training",
        "sparse_attention",
        "elasticity",
        "autotuning",
        "pipeline",
        "hybrid_engine",
        "nebula",
        "compile",
        "timers",
        "weight_quantization",
        "use_data_before_expert_parallelism",
        "graph_harvesting",
        "use_node_local_storage",
        "load_universal_checkpoint",
        "dataloader_drop_last",
        "zero_quantized_weights",
        "zero_quantized_gradients",
        "mics_shard_size",
        "mics_hierarchical_params_gather",
        "tensor_parallel",
        "sequence_parallel_size",
        "gradient_accumulation_dtype",
    }
)

# `zero_optimization` keys, names and aliases of DeepSpeedZeroConfig (a test keeps this in sync).
ZERO_KEYS = frozenset(
    {
        "stage",
        "contiguous_gradients",
        "reduce_scatter",
        "reduce_bucket_size",
        "use_multi_rank_bucket_allreduce",
        "allgather_partitions",
        "allgather_bucket_size",
        "overlap_comm",
        "load_from_fp32_weights",
        "elastic_checkpoint",
        "offload_param",
        "offload_optimizer",
        "sub_group_size",
        "cpu_offload_param",
        "cpu_offload_use_pin_memory",
        "cpu_offload",
        "prefetch_bucket_size",
        "stage3_prefetch_bucket_size",
        "param_persistence_threshold",
        "stage3_param_persistence_threshold",
        "model_persistence_threshold",
        "stage3_model_persistence_threshold",
        "max_live_parameters",
        "stage3_max_live_parameters",
        "max_reuse_distance",
        "stage3_max_reuse_distance",
        "gather_16bit_weights_on_model_save",
        "stage3_gather_16bit_weights_on_model_save",
        "stage3_gather_fp16_weights_on_model_save",
        "module_granularity_threshold",
        "stage3_module_granularity_threshold",
        "use_all_reduce_for_fetch_params",
        "stage3_use_all_reduce_for_fetch_params",
        "allgather_sequential",
        "stage3_allgather_sequential",
        "ignore_unused_parameters",
        "legacy_stage1",
        "round_robin_gradients",
        "zero_hpz_partition_size",
        "zero_quantized_weights",
        "zero_quantized_nontrainable_weights",
        "zero_quantized_gradients",
        "memory_efficient_linear",
        "pipeline_loading_checkpoint",
        "override_module_apply",
        "log_trace_cache_warnings",
        "enable_sanity_checks",
        "leaf_module",
        "compute_grad_norm",
        "parameter_alignment",
        "zenflow",
        "save_muon_momentum_buffer_in_memory",
    }
)

# Keys the Trainer fills from TrainingArguments when they say "auto" (and checks when they don't).
TRAINER_FILLED = (
    "train_batch_size",
    "train_micro_batch_size_per_gpu",
    "gradient_accumulation_steps",
    "gradient_clipping",
)


class DeepSpeedConfigError(RecipeError):
    """A DeepSpeed config file that cannot work as written."""


def shipped_config(zero: int, offload: bool = False) -> Path:
    """`ds_configs/zero{N}[_offload].json` for `--zero N [--offload]`."""
    if zero not in (1, 2, 3):
        raise DeepSpeedConfigError(f"--zero must be 1, 2 or 3, got {zero}.")
    if offload and zero == 1:
        raise DeepSpeedConfigError(
            "--offload (launch.offload) needs --zero 2 or 3: ZeRO-1 partitions only optimizer state, and the shipped offload "
            "configs are zero2_offload.json (optimizer state on CPU) and zero3_offload.json (parameters too)."
        )
    path = DS_CONFIG_DIR / f"zero{zero}{'_offload' if offload else ''}.json"
    if not path.is_file():
        raise DeepSpeedConfigError(
            f"{path} is missing: the shipped DeepSpeed configs live in {DS_CONFIG_DIR}/."
        )
    return path


def resolve_deepspeed_config(launch: Launch) -> str | None:
    """The DeepSpeed config a run uses: `--deepspeed FILE`, or the shipped one for `--zero N`, or None."""
    if launch.offload and launch.zero is None:
        what = "the config file" if launch.deepspeed_config else "nothing"
        raise DeepSpeedConfigError(
            f"--offload (launch.offload) picks a shipped ZeRO config and needs --zero 2 or 3 (it would apply to {what}); "
            "with --deepspeed FILE, set offload_optimizer / offload_param in the file instead."
        )
    if launch.zero is not None and launch.deepspeed_config:
        stage = _stage(load_deepspeed_config(launch.deepspeed_config))
        if stage != launch.zero or launch.offload:
            raise DeepSpeedConfigError(
                f"--zero {launch.zero}{' --offload' if launch.offload else ''} contradicts --deepspeed "
                f"{launch.deepspeed_config} (ZeRO stage {stage}): give one of them."
            )
        return str(Path(launch.deepspeed_config).resolve())
    if launch.deepspeed_config:
        path = Path(launch.deepspeed_config)
        if not path.is_file():
            raise DeepSpeedConfigError(
                f"launch.deepspeed_config (--deepspeed): {str(path)!r} does not exist. Shipped configs: "
                f"{', '.join(p.name for p in sorted(DS_CONFIG_DIR.glob('*.json')))} in {DS_CONFIG_DIR}/ "
                "(or use --zero 1|2|3 [--offload])."
            )
        return str(path.resolve())
    if launch.zero is not None:
        return str(shipped_config(launch.zero, launch.offload))
    return None


def load_deepspeed_config(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    fix = "Point --deepspeed (launch.deepspeed_config) at a DeepSpeed JSON config file, or use --zero 1|2|3."
    if not path.is_file():
        raise DeepSpeedConfigError(f"DeepSpeed config {str(path)!r} does not exist. {fix}")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DeepSpeedConfigError(
            f"DeepSpeed config {path}:{exc.lineno}: not valid JSON ({exc.msg} at column {exc.colno}). "
            "Fix the syntax there (JSON allows no trailing commas or comments)."
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DeepSpeedConfigError(f"DeepSpeed config {path}: cannot be read ({exc}). {fix}") from None
    if not isinstance(config, dict):
        raise DeepSpeedConfigError(
            f'DeepSpeed config {path}: the top level must be a JSON object (e.g. {{"zero_optimization": '
            f'{{"stage": 2}}}}), not a JSON {type(config).__name__}. Fix the file.'
        )
    return config


def validate_deepspeed_config(
    config: dict[str, Any] | str | Path,
    training: Training | None = None,
    world_size: int | None = None,
    param_groups: Sequence[Any] = (),
    stages: Sequence[Any] = (),
    precision: str | None = None,
) -> dict[str, Any]:
    """Check a DeepSpeed config for what would fail late or silently; returns the parsed config.

    With `training` (and `world_size`), values pinned instead of "auto" must agree with the recipe, and then
    the config is filled as the Trainer fills it and parsed by DeepSpeed's own config classes
    (`trainers.launchers.deepspeed_judge`). An `optimizer` / `scheduler` section is accepted unless the
    recipe declares `param_groups` or `stages` (which DeepSpeed's own optimizer would drop). `precision`:
    the run's resolved `training.precision` (None: resolved as this machine would).
    """
    where = "DeepSpeed config"
    source: Path | None = None
    if not isinstance(config, dict):
        where = f"DeepSpeed config {config}"
        source = Path(config)
        config = load_deepspeed_config(config)
    problems: list[str] = []
    problems += _unknown(config, TOP_LEVEL_KEYS, "")
    zero = config.get("zero_optimization", {})
    if not isinstance(zero, dict):
        problems.append('zero_optimization must be an object, e.g. {"stage": 2}')
        zero = {}
    problems += _unknown(zero, ZERO_KEYS, "zero_optimization.")
    stage = _stage(config)
    if stage not in (0, 1, 2, 3):
        problems.append(f"zero_optimization.stage must be 0, 1, 2 or 3, got {stage!r}")
    offload_opt = _offload_device(zero, "offload_optimizer") or ("cpu" if zero.get("cpu_offload") else None)
    offload_param = _offload_device(zero, "offload_param") or (
        "cpu" if zero.get("cpu_offload_param") else None
    )
    if offload_opt and isinstance(stage, int) and stage < 2:
        problems.append(
            f"zero_optimization.offload_optimizer (device {offload_opt!r}) with stage {stage}: offloading "
            "optimizer state needs stage 2 or 3 here (use ds_configs/zero2_offload.json)"
        )
    if offload_param and stage != 3:
        problems.append(
            f"zero_optimization.offload_param (device {offload_param!r}) with stage {stage}: only ZeRO-3 "
            "partitions parameters, so only stage 3 can offload them (use ds_configs/zero3_offload.json)"
        )
    if _enabled(config.get("fp16")) is True and _enabled(config.get("bf16")) is True:
        problems.append('fp16.enabled and bf16.enabled are both true: pick one (or "auto" for both)')
    for key in ("offload_optimizer", "offload_param"):
        if key in zero and not isinstance(zero[key], dict | type(None)):
            problems.append(
                f'zero_optimization.{key} must be an object such as {{"device": "cpu"}}, got {zero[key]!r}'
            )
    declared = [f"{len(param_groups)} param_groups"] if param_groups else []
    declared += [f"{len(stages)} unfreezing stages"] if stages else []
    sections = [s for s in ("optimizer", "scheduler") if s in config]
    if sections and declared:
        named = " and ".join(f"{s!r}" for s in sections)
        problems.append(
            f"{named} section{'s' if len(sections) > 1 else ''} while the recipe declares "
            f"{' and '.join(declared)}: DeepSpeed would build its own optimizer over all trainable parameters "
            "as one group, dropping the per-group LRs and the gated stage groups; remove "
            f"{'them' if len(sections) > 1 else 'it'} (the Trainer then passes the recipe's own), or drop the "
            "recipe's param_groups and stages"
        )
    if training is not None:
        problems += _pinned_mismatches(config, training, world_size)
    if problems:
        raise DeepSpeedConfigError(f"{where} cannot work as written: " + "; ".join(problems) + ".")
    if training is not None:
        from trainers.launchers.deepspeed_judge import judge_filled_config

        try:
            judge_filled_config(config, training, world_size or 1, where, source, precision)
        except RecipeError as exc:
            raise DeepSpeedConfigError(str(exc)) from None
    return config


def _stage(config: dict[str, Any]) -> Any:
    zero = config.get("zero_optimization", {})
    return zero.get("stage", 0) if isinstance(zero, dict) else 0


def zero_stage(config: dict[str, Any]) -> int:
    """The ZeRO stage a loaded config asks for (0 when it has no zero_optimization)."""
    stage = _stage(config)
    return stage if isinstance(stage, int) else 0


def offload_devices(config: dict[str, Any]) -> tuple[str | None, str | None]:
    """(optimizer offload device, parameter offload device) of a loaded config; None where it does not offload."""
    zero = config.get("zero_optimization", {})
    if not isinstance(zero, dict):
        return None, None
    optimizer = _offload_device(zero, "offload_optimizer") or ("cpu" if zero.get("cpu_offload") else None)
    params = _offload_device(zero, "offload_param") or ("cpu" if zero.get("cpu_offload_param") else None)
    return optimizer, params


def _enabled(section: Any) -> Any:
    return section.get("enabled") if isinstance(section, dict) else None


def _offload_device(zero: dict[str, Any], key: str) -> str | None:
    section = zero.get(key)
    if not isinstance(section, dict):
        return None
    device = section.get("device", "none")
    return None if device in (None, "none") else str(device)


def _unknown(section: dict[str, Any], known: frozenset[str], prefix: str) -> list[str]:
    problems = []
    for key in section:
        if key in known:
            continue
        close = difflib.get_close_matches(key, sorted(known), n=3, cutoff=0.6)
        hint = f" (did you mean {', '.join(prefix + c for c in close)}?)" if close else ""
        problems.append(f"unknown key {prefix}{key!r}{hint}")
    return problems


def _pinned_mismatches(config: dict[str, Any], training: Training, world_size: int | None) -> list[str]:
    """Values pinned in the file (not "auto") that disagree with the recipe: the Trainer would reject them
    on every rank after loading the model; say which recipe key to change instead."""
    expected = {
        "train_micro_batch_size_per_gpu": (training.batch_size, "training.batch_size"),
        "gradient_accumulation_steps": (training.grad_accum, "training.grad_accum"),
        "gradient_clipping": (training.max_grad_norm, "training.max_grad_norm"),
    }
    if world_size:
        expected["train_batch_size"] = (
            training.batch_size * training.grad_accum * world_size,
            f"training.batch_size x training.grad_accum x {world_size} processes",
        )
    problems = []
    for key in TRAINER_FILLED:
        value = config.get(key, "auto")
        if value == "auto" or key not in expected:
            continue
        want, source = expected[key]
        if not isinstance(value, int | float) or float(value) != float(want):
            problems.append(f'{key}={value!r} but the recipe gives {want} ({source}); set it to "auto"')
    return problems


def deepspeed_config_from_accelerate_env(env: dict[str, str] | None = None) -> str | None:
    """The config an `accelerate launch` DeepSpeed setup asked for (yaml `distributed_type: DEEPSPEED`).

    accelerate hands it to the workers as environment variables; the Trainer only enables DeepSpeed on
    CPU when `TrainingArguments(deepspeed=...)` names a config, so translate them into one.
    """
    import os

    real_env = env is None
    env = dict(os.environ) if env is None else env
    if env.get("ACCELERATE_USE_DEEPSPEED", "false").lower() not in ("1", "true", "yes"):
        return None
    if env.get("ACCELERATE_DEEPSPEED_CONFIG_FILE", "none") not in ("", "none"):
        return str(Path(env["ACCELERATE_DEEPSPEED_CONFIG_FILE"]).resolve())
    stage = int(env.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2"))
    offload = any(
        env.get(f"ACCELERATE_DEEPSPEED_OFFLOAD_{what}_DEVICE", "none") not in ("", "none")
        for what in ("OPTIMIZER", "PARAM")
    )
    if stage == 0:
        return None
    if real_env:
        # The yaml's DeepSpeed fields now live in the config file; accelerate refuses a config file while
        # they are still listed (ValueError "... config variables will be ignored"), so unlist them.
        os.environ["ACCELERATE_CONFIG_DS_FIELDS"] = ",".join(
            f
            for f in env.get("ACCELERATE_CONFIG_DS_FIELDS", "").split(",")
            if f and f not in _TRANSLATED_FIELDS
        )
    return str(shipped_config(stage, offload and stage > 1))


# accelerate yaml DeepSpeed fields that the shipped config (and the recipe, through "auto") replaces.
_TRANSLATED_FIELDS = frozenset(
    {
        "gradient_accumulation_steps",
        "gradient_clipping",
        "zero_stage",
        "offload_optimizer_device",
        "offload_param_device",
        "offload_param_nvme_path",
        "offload_optimizer_nvme_path",
        "zero3_save_16bit_model",
        "mixed_precision",
        "zero3_init_flag",
    }
)


def deepspeed_config_for(
    launch: Launch,
    training: Training | None = None,
    world_size: int | None = None,
    env: dict[str, str] | None = None,
    param_groups: Sequence[Any] = (),
    stages: Sequence[Any] = (),
    precision: str | None = None,
) -> str | None:
    """Resolve (`--zero`, `--deepspeed`, or an accelerate DeepSpeed launch) and validate; None without DeepSpeed."""
    path = resolve_deepspeed_config(launch) or deepspeed_config_from_accelerate_env(env)
    if path is not None:
        validate_deepspeed_config(path, training, world_size, param_groups, stages, precision)
    return path
