"""Parameter names → layer groups, shared by the importance ranking and the parameter-change report.

A group is the outermost numbered block a parameter lives in (`vit.encoder.layer.3`,
`text_decoder.bert.encoder.layer.11`, `model.language_model.decoder.layers.5`), else its module path cut to
two components (`vit.embeddings`, `classifier`), or deeper where those two hold numbered blocks too
(`text_decoder.bert.embeddings`, not all of `text_decoder.bert`). peft's wrapper names are read as the original model's
(`base_model.model.` prefix, `.base_layer`, `lora_A.default`, `modules_to_save.default`), so a LoRA run and
a full run of one model group the same way.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_PEFT_PREFIX = "base_model.model."
_NUMBERED = re.compile(r"^(.*?\b(?:layers?|blocks?|stages?|h|convs)\.\d+)(?:\.|$)")
_PEFT_PARTS = re.compile(
    r"\.(?:base_layer|original_module|modules_to_save\.[^.]+|lora_[A-Za-z_]+\.[^.]+)(?=\.|$)"
)


def original_name(name: str) -> str:
    """The model's own parameter name behind peft's wrapper names."""
    if name.startswith(_PEFT_PREFIX):
        name = name[len(_PEFT_PREFIX) :]
    return _PEFT_PARTS.sub("", name)


def layer_of(name: str) -> str:
    """The layer group of a parameter (or module) name."""
    name = original_name(name)
    match = _NUMBERED.match(name)
    if match:
        return match.group(1)
    parts = name.split(".")
    module = parts[:-1] or parts  # drop the leaf (`weight`, `bias`)
    return ".".join(module[:2])


def group_names(names: Iterable[str]) -> dict[str, str]:
    """{parameter name: layer group} for a whole model, in the model's order (see the module docstring)."""
    names = list(names)
    numbered = {g for g in map(layer_of, names) if _NUMBERED.match(g)}
    groups = {}
    for name in names:
        group = layer_of(name)
        if group not in numbered:
            module = original_name(name).split(".")
            module = module[:-1] or module
            depth = 2
            while depth < len(module) and any(n.startswith(".".join(module[:depth]) + ".") for n in numbered):
                depth += 1
            group = ".".join(module[:depth])
        groups[name] = group
    return groups


def group_order(names: Iterable[str]) -> list[str]:
    """Layer groups in the order their first parameter appears (the model's own order)."""
    return list(dict.fromkeys(group_names(names).values()))
