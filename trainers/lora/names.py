"""Parameter names through a peft wrapper.

`get_peft_model` keeps the original model object as `peft_model.base_model.model`, so every name gains a
`base_model.model.` prefix. Recipes (freeze rules, stages, param-group regexes) address the original
model; the plan works on the unwrapped model and these helpers translate at the edges (the optimizer).
"""

from __future__ import annotations

from torch import nn

PEFT_PREFIX = "base_model.model."


def unwrap_peft(model: nn.Module) -> nn.Module:
    """The original model inside a PeftModel (the same object, with adapter layers injected), else `model`."""
    from peft import PeftModel

    return model.base_model.model if isinstance(model, PeftModel) else model


def strip_peft_prefix(name: str) -> str:
    return name.removeprefix(PEFT_PREFIX)
