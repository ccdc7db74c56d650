"""QLoRA for any LoRA recipe: `model.quantization = "4bit" | "8bit"` through bitsandbytes.

The base model is loaded quantized (4-bit NF4 with double quantization, or LLM.int8), frozen, and only the
LoRA adapters and the `modules_to_save` heads train. Three things make that correct:

- **The skip list.** transformers keeps some modules in full precision by itself (tied weights, the output
  embeddings, the module of the last parameter), but only while `llm_int8_skip_modules` is unset: passing the
  list at all, even `[]`, switches that off, and a tied head then fails. Its "last module" guess also misses
  any head whose last parameter is a bias (a ViT `classifier` comes out as Linear4bit). So the list is
  built here, for the architecture, from transformers' own automatic keys (bias names mapped to their
  module) plus every module the recipe trains fully (`lora.modules_to_save` and those the freeze rules
  unfreeze); a name that matches no module is an error, since the head would silently be quantized.
- **`peft.prepare_model_for_kbit_training`** after loading: freezes the base, casts the non-quantized
  fp16/bf16 parameters (norms, heads) to fp32, and optionally turns on gradient checkpointing.
- **Merging onto a fresh, unquantized base** (`merge_onto_fresh_base`): merging into the quantized weights
  would round the merged weights back to 4/8 bits; the adapter is trained against the quantized base but is
  exported on the real pretrained weights.

Errors (one paragraph each, RecipeError): quantization without LoRA (a quantized base cannot be trained
fully), quantization under ZeRO-3, a model part that cannot be quantized (a full-precision name matching
nothing, a Linear sharing its weight with another module, nothing left to quantize).

bitsandbytes 0.50 runs both 4-bit and 8-bit on CPU, so all of this is tested on CPU.

How it plugs in: `Model.quantization: Literal["4bit", "8bit"] | None = None`; recipe validation calls
`check_quantization(recipe.model.quantization, lora=recipe.lora is not None, zero_stage=recipe.launch.zero)`;
the family loader passes `LoadOptions(quantization=Quantization(kind, compute_dtype, keep_full_precision=
lora.modules_to_save + rule-derived modules))` to `trainers.models.hub.load_pretrained`; `prepare_model`
calls `prepare_quantized(model)` before `apply_lora`; `save_lora_outputs` builds `merged/` with
`merge_onto_fresh_base(lambda: load_pretrained(id, cls, options=<same, without quantization>)[0], best/)`.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from trainers.errors import RecipeError

QuantizationKind = Literal["4bit", "8bit"]
KINDS = ("4bit", "8bit")


def check_quantization(
    kind: str | None, *, lora: bool, zero_stage: int | None, key: str = "model.quantization"
) -> None:
    """Checks on the recipe alone, each a one-paragraph RecipeError.

    Pure Python, but `trainers.lora` imports torch and `trainers.recipe` must not: call it where the plan
    is built (before any model is loaded, so `--dry-run` reports it), not from the recipe dataclasses.
    """
    if kind is None:
        return
    if kind not in KINDS:
        raise RecipeError(f"{key} must be '4bit', '8bit' or none, got {kind!r}.")
    if not lora:
        raise RecipeError(
            f"{key}={kind!r} needs a `lora` section: a quantized base model is frozen (its 4/8-bit weights "
            "take no gradient steps), so only LoRA adapters and their modules_to_save can train (QLoRA). "
            "Add lora=Lora(...) to the recipe, or set model.quantization=none for a full fine-tune."
        )
    if zero_stage == 3:
        raise RecipeError(
            f"{key}={kind!r} cannot run under DeepSpeed ZeRO-3 (launch.zero=3 / --zero 3): transformers builds "
            "a quantized model whole on every rank (it skips deepspeed.zero.Init for quantized models), and "
            "ZeRO-3 would then have to partition bitsandbytes' packed 4/8-bit tensors, which this launcher "
            "does not support. Use --zero 2 or 1 (optimizer state and gradients of the small LoRA part are "
            "what they split) or plain DDP, or set model.quantization=none."
        )


# ---------------------------------------------------------------------------------------- skip list


def _module_names(model: nn.Module) -> set[str]:
    return {name for name, _ in model.named_modules() if name}


def _skipped(path: str, patterns: Sequence[str]) -> bool:
    """transformers' own matching of the skip list (prefix at a module boundary, regex, or suffix)."""
    from transformers.quantizers.quantizers_utils import should_convert_module

    return not should_convert_module(path, list(patterns))


def automatic_keep(model: nn.Module) -> list[str]:
    """What transformers keeps in full precision when no skip list is given, as module names.

    Its keys are parameter names with `.weight` stripped; a head whose last parameter is `classifier.bias`
    yields `classifier.bias`, which matches no module, so that head would be quantized. Map such names to
    their module.
    """
    from transformers.quantizers.base import get_keys_to_not_convert

    modules = _module_names(model)
    params = {name for name, _ in model.named_parameters(remove_duplicate=False)}
    keep = set()
    for key in get_keys_to_not_convert(model):
        if key not in modules and key in params:  # "classifier.bias" -> "classifier"
            key = key.rsplit(".", 1)[0]
        keep.add(key)
    return sorted(k for k in keep if k)


def skip_modules(model: nn.Module, keep_full_precision: Sequence[str] = ()) -> list[str]:
    """The `llm_int8_skip_modules` list: transformers' automatic keys + every module trained fully.

    A name in `keep_full_precision` that matches no module is an error: the module it meant would be quantized.
    """
    modules = sorted(_module_names(model))
    for name in keep_full_precision:
        if not any(_skipped(path, [name]) for path in modules):
            close = difflib.get_close_matches(name, modules, n=5, cutoff=0.4)
            raise RecipeError(
                f"model.quantization: {name!r} (a module trained fully, from lora.modules_to_save or a freeze rule) "
                f"is not a module of {type(model).__name__}, so it cannot be kept in full precision and the part "
                f"it means would be quantized. Nearest module paths: {', '.join(close) or 'none'}."
            )
    return sorted(set(automatic_keep(model)) | set(keep_full_precision))


def _quantizable(model: nn.Module) -> dict[str, nn.Module]:
    from transformers.pytorch_utils import Conv1D

    return {n: m for n, m in model.named_modules() if n and (type(m) is nn.Linear or isinstance(m, Conv1D))}


def check_quantizable(model: nn.Module, skip: Sequence[str]) -> list[str]:
    """The module paths that will be quantized; RecipeError for a part that cannot be."""
    targets = {n: m for n, m in _quantizable(model).items() if not _skipped(n, skip)}
    if not targets:
        raise RecipeError(
            f"model.quantization: {type(model).__name__} has no Linear layer left to quantize (bitsandbytes "
            f"quantizes only nn.Linear; full precision: {', '.join(skip) or 'none'}). Set model.quantization=none."
        )
    owners: dict[int, list[str]] = {}
    for name, module in model.named_modules():
        for pname, param in module.named_parameters(recurse=False):
            owners.setdefault(id(param), []).append(f"{name}.{pname}" if name else pname)
    for name, module in targets.items():
        shared = [o for o in owners.get(id(module.weight), []) if o != f"{name}.weight"]
        if shared:
            raise RecipeError(
                f"model.quantization: {name} cannot be quantized: its weight is the same tensor as {shared[0]} "
                "(tied weights), and a quantized copy would break the tie. Keep it in full precision: add "
                f"{name!r} to lora.modules_to_save (or untie the weights in the model config)."
            )
    return sorted(targets)


# ---------------------------------------------------------------------------------------- config


@dataclass
class Quantization:
    """A quantization request; `for_model` turns it into the BitsAndBytesConfig for one architecture.

    `compute_dtype` is what the 4-bit matmuls run in (float32 on CPU; bfloat16 on recent GPUs).
    """

    kind: QuantizationKind
    compute_dtype: torch.dtype | str = "float32"
    keep_full_precision: tuple[str, ...] = ()
    quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = True

    def for_model(self, model_class: Any, config: Any) -> Any:
        """The BitsAndBytesConfig, with the skip list computed on a meta-device instance (no memory)."""
        model = meta_model(model_class, config)
        skip = skip_modules(model, self.keep_full_precision)
        check_quantizable(model, skip)
        return bnb_config(self.kind, skip, self.compute_dtype, self.quant_type, self.double_quant)


def meta_model(model_class: Any, config: Any) -> nn.Module:
    with torch.device("meta"):
        if hasattr(model_class, "from_config") and model_class.__module__.startswith(
            "transformers.models.auto"
        ):
            return model_class.from_config(config)
        return model_class(config)


def bnb_config(
    kind: str,
    skip: Sequence[str],
    compute_dtype: torch.dtype | str = "float32",
    quant_type: str = "nf4",
    double_quant: bool = True,
) -> Any:
    """transformers' BitsAndBytesConfig: NF4 + double quantization for 4-bit, LLM.int8 for 8-bit."""
    from transformers import BitsAndBytesConfig

    check_quantization(kind, lora=True, zero_stage=None)
    dtype = getattr(torch, compute_dtype) if isinstance(compute_dtype, str) else compute_dtype
    if kind == "4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=quant_type,
            bnb_4bit_use_double_quant=double_quant,
            bnb_4bit_compute_dtype=dtype,
            llm_int8_skip_modules=list(skip),
        )
    return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=list(skip))


# ---------------------------------------------------------------------------------------- model


def quantized_modules(model: nn.Module) -> dict[str, str]:
    """path → class name of every bitsandbytes layer (Linear4bit / Linear8bitLt) in the model."""
    import bitsandbytes as bnb

    kinds = (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)
    return {n: type(m).__name__ for n, m in model.named_modules() if isinstance(m, kinds)}


def prepare_quantized(model: nn.Module, gradient_checkpointing: bool = False) -> nn.Module:
    """peft's `prepare_model_for_kbit_training`: base frozen, non-quantized half-precision params in fp32; and
    4-bit layers kept in the layout training runs through (`keep_training_layout`)."""
    from peft import prepare_model_for_kbit_training

    keep_training_layout(model)
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)


def keep_training_layout(model: nn.Module) -> None:
    """On a CPU with AVX512-BF16, bitsandbytes (0.50) repacks a Linear4bit's weight for its inference kernel on a
    forward in eval mode without grad and may then serve training's forwards through that kernel, whose bias add
    is in place. Seen here when a layer's first forward is an evaluation (the one before training): the first
    training step failed with "a view of a leaf Variable that requires grad is being used in an in-place
    operation". A run evaluates between its steps, so the repacking is turned off."""
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False


def merge_onto_fresh_base(
    load_base: Callable[[], nn.Module], adapter_dir: str | Path, plan: Any = None
) -> nn.Module:
    """Fresh *unquantized* base + the saved adapter → `merge_and_unload()`: a plain full-precision model.

    `load_base` must load the same checkpoint without quantization; a quantized base is refused, since
    merging into it would round the merged weights to 4/8 bits. `plan` is the run's LoraPlan (untied weights).
    """
    from trainers.lora.export import load_adapter_model

    base = load_base()
    quantized = quantized_modules(base)
    if quantized:
        raise ValueError(
            f"merge_onto_fresh_base needs an unquantized base; {len(quantized)} modules are quantized "
            f"(e.g. {next(iter(quantized))}). Load the base without LoadOptions.quantization."
        )
    return load_adapter_model(base, Path(adapter_dir), plan).merge_and_unload()


__all__ = [
    "KINDS",
    "Quantization",
    "automatic_keep",
    "bnb_config",
    "check_quantizable",
    "check_quantization",
    "merge_onto_fresh_base",
    "meta_model",
    "prepare_quantized",
    "quantized_modules",
    "skip_modules",
]
