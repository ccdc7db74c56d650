"""Writing a LoRA run's outputs: the adapter (stock peft format) and, optionally, the merged full model.

Under ZeRO-3 every parameter is partitioned (shape [0] outside a gather), and peft's own state-dict path
has open bugs there (peft #2450, #2884: adapter / modules_to_save tensors saved with shape [0]). So the
adapter's tensors are gathered here explicitly, one at a time, on every rank, and rank 0 hands the full
tensors to `save_pretrained(state_dict=...)`. The merged model is built on rank 0 from a fresh base plus
the saved adapter (the same path a user takes), so it needs no gathering at all.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from trainers.fsdp import full_tensor
from trainers.lora.apply import LoraPlan, mark_untied, untie

logger = logging.getLogger(__name__)

ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")


def _gathered(param: torch.Tensor):
    """A context in which a ZeRO-3 partitioned parameter holds its full tensor (no-op otherwise)."""
    if hasattr(param, "ds_id"):
        import deepspeed

        return deepspeed.zero.GatheredParameters([param], modifier_rank=None)
    return contextlib.nullcontext()


def adapter_state_dict(peft_model: nn.Module, bias: str = "none") -> dict[str, torch.Tensor]:
    """Full (gathered) tensors of everything the adapter saves: LoRA weights, modules_to_save copies, biases.

    Collective under ZeRO-3 and FSDP: every rank must call it, in the same order.
    """
    out: dict[str, torch.Tensor] = {}
    for name, tensor in peft_model.state_dict(keep_vars=True).items():
        wanted = "lora_" in name or ".modules_to_save." in name or (bias != "none" and name.endswith("bias"))
        if not wanted:
            continue
        with _gathered(tensor):
            out[name] = full_tensor(tensor.detach()).clone().cpu()  # FSDP2: the DTensor gathered
    return out


def save_adapter(
    peft_model: nn.Module, directory: Path, processor: Any, is_main: bool, bias: str = "none"
) -> Path:
    """`adapter_model.safetensors` + `adapter_config.json` + processor files, written once by the main process."""
    state = adapter_state_dict(peft_model, bias)
    if is_main:
        empty = [n for n, t in state.items() if t.numel() == 0]
        if empty:
            raise RuntimeError(f"adapter tensors came out empty (ZeRO partitions?): {empty[:3]}")
        directory.mkdir(parents=True, exist_ok=True)
        peft_model.save_pretrained(str(directory), state_dict=state, safe_serialization=True)
        if processor is not None:
            processor.save_pretrained(str(directory))
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
    return directory


def load_adapter_model(base: nn.Module, adapter_dir: Path, plan: LoraPlan | None = None) -> nn.Module:
    """Stock `PeftModel.from_pretrained` on `base` (after untying what the run untied, if anything)."""
    from peft import PeftModel

    if plan is not None and plan.tied:
        untie(base, plan.untied_names)
        mark_untied(base)
    return PeftModel.from_pretrained(base, str(adapter_dir))


def save_merged(
    base_factory: Callable[[], nn.Module], adapter_dir: Path, directory: Path, processor: Any, plan: LoraPlan
) -> Path:
    """Fresh base + saved adapter → `merge_and_unload()` → `save_pretrained` (a plain `from_pretrained` dir)."""
    merged = load_adapter_model(base_factory(), adapter_dir, plan).merge_and_unload()
    if plan.tied:
        mark_untied(merged)
    directory.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(str(directory), safe_serialization=True)
    if processor is not None:
        processor.save_pretrained(str(directory))
    return directory


def directory_bytes(directory: Path, names: tuple[str, ...] = ("*.safetensors",)) -> int:
    return sum(f.stat().st_size for pattern in names for f in directory.glob(pattern))
