"""What ZeRO-3 partitioning changes for code that reads parameters.

Under ZeRO-3 the model is created already partitioned (`from_pretrained` inside `deepspeed.zero.Init`, because
`trainers.run` builds the `TrainingArguments`, and with them transformers' `HfDeepSpeedConfig`, before loading):
every rank then holds only its shard, and a parameter's own tensor is empty. `param.numel()` is 0 there; the
full size is `param.ds_numel`. Counting code (freeze report, stages, LoRA plan, param groups, towers) goes
through `param_numel`, so the counts of a 2-rank ZeRO-3 run equal the 1-process ones.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


def param_numel(param: Any) -> int:
    """The full number of elements of a parameter, partitioned (ZeRO-3: `ds_numel`) or not."""
    ds_numel = getattr(param, "ds_numel", None)
    return int(ds_numel) if ds_numel is not None else param.numel()


def is_partitioned(param: Any) -> bool:
    return hasattr(param, "ds_id")


def local_share(model: Any) -> tuple[int, int]:
    """(elements this rank holds, elements of the whole model): a partitioned parameter counts its shard."""
    held = total = 0
    for param in model.parameters():
        total += param_numel(param)
        held += param.ds_tensor.numel() if is_partitioned(param) else param.numel()
    return held, total


@contextlib.contextmanager
def unpartitioned_loading() -> Iterator[None]:
    """Load a whole model on this process alone while a ZeRO-3 config is active (a merged export on the main
    process): inside `zero.Init` a load is a collective, and the other ranks are not loading."""
    from transformers.integrations import deepspeed as hf_deepspeed

    saved = hf_deepspeed._hf_deepspeed_config_weak_ref
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = saved


def zero3_enabled() -> bool:
    """Whether a ZeRO-3 config is active in this process (loads then happen inside `deepspeed.zero.Init`)."""
    from transformers.integrations import is_deepspeed_zero3_enabled

    return is_deepspeed_zero3_enabled()


def ready_for_partitioned_loading() -> None:
    """Under ZeRO-3, bring up DeepSpeed's comm (over the launcher's process group) before any load: `zero.Init`
    reads the world size from it, and without it checks the batch sizes against a world of 1."""
    if not zero3_enabled():
        return
    import deepspeed
    import torch.distributed as torch_dist

    deepspeed.init_distributed(dist_backend=torch_dist.get_backend() if torch_dist.is_initialized() else None)


def fsdp_active() -> bool:
    """Whether this process trains under FSDP (accelerate's state says so, `trainers.fsdp`): evaluation must
    then keep every rank's forward passes in step (`generate(synced_gpus=True)`), as under ZeRO-3."""
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedType

    return AcceleratorState._shared_state.get("distributed_type") == DistributedType.FSDP


def synced_generation() -> bool:
    """Whether `generate` must run with `synced_gpus=True` (ZeRO-3 or FSDP over several ranks): under ZeRO-3 every
    decoding step gathers parameters collectively, so a rank that stops early hangs the others. For tasks'
    `predict` hooks."""
    import torch.distributed as torch_dist

    sharded = zero3_enabled() or fsdp_active()  # FSDP2 gathers each wrapped block collectively too
    return sharded and torch_dist.is_initialized() and torch_dist.get_world_size() > 1
