"""LoRA from the recipe's `lora` section: peft config, target validation, tied weights, adapter export.

`apply_lora` runs inside `prepare_model` after the freeze rules and before stage gates and optimizer
groups; `save_lora_outputs` writes the adapter (and optionally the merged model) at the end of a run.
"""

from trainers.lora.apply import LoraPlan, apply_lora, peft_config
from trainers.lora.names import PEFT_PREFIX, strip_peft_prefix, unwrap_peft
from trainers.lora.targets import resolve_targets, supported_leaf_modules

__all__ = [
    "PEFT_PREFIX",
    "LoraPlan",
    "apply_lora",
    "peft_config",
    "resolve_targets",
    "strip_peft_prefix",
    "supported_leaf_modules",
    "unwrap_peft",
]
