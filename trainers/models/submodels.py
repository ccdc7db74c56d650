"""The pretrained (sub-)models inside a model: what per-sub-model settings (attention, checkpointing) act on.

A dual encoder holds a ViT and a MiniLM, a chat VLM its vision and language models; each is a transformers
`PreTrainedModel` with its own config and its own support flags.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn


def pretrained_submodels(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(path, module) of every `PreTrainedModel` in `model`, itself first ("" path) when it is one."""
    from transformers import PreTrainedModel

    return [(n, m) for n, m in model.named_modules() if isinstance(m, PreTrainedModel)]
