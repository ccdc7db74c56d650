"""Between two runs in one process of a multi-run test job: let the next run build a fresh accelerate /
DeepSpeed setup (a real launch trains one recipe per process, so `trainers` itself never needs this)."""

from __future__ import annotations

import gc
import os

START_ENV = frozenset(os.environ)


def reset_between_runs() -> None:
    import torch.distributed as dist
    from accelerate.state import AcceleratorState
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()
    AcceleratorState._reset_state(reset_partial_state=False)
    # accelerate leaves ACCELERATE_USE_DEEPSPEED=true behind once DeepSpeed ran; a later run would inherit it
    for key in [k for k in os.environ if k.startswith("ACCELERATE_") and k not in START_ENV]:
        del os.environ[key]
    gc.collect()
    if dist.is_initialized():
        dist.barrier()
