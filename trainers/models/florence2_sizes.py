"""The "LoRA vs layer freeze vs full" table of Florence-2 base and large, counted on the meta device.

    python -m trainers.models.florence2_sizes

Per recipe: trainable parameters and their share of the base model, a memory estimate and the checkpoint size.
Memory: float32 weights held (4 bytes per parameter: the base, LoRA weights, the untied head / modules_to_save
copies) + gradients and AdamW's two moments for what trains (12 bytes per trainable
parameter); activations are not included (they depend on batch and sequence length). Checkpoint: what `best/`
holds (an adapter: LoRA and modules_to_save tensors; otherwise the whole model), float32. The keyword freeze is
given twice: with `lm_head` trained (it is the tied 39M shared embedding, as the recipe does) and without it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from trainers.models.florence2 import FLORENCE2_BASE, FLORENCE2_LARGE, florence2_meta_model

LORA_TARGETS = r"model\.(vision_tower|language_model)\..*\.(q_proj|k_proj|v_proj|fc1|fc2)|lm_head"
HYBRID_TARGETS = ("q_proj", "v_proj")


@dataclass(frozen=True)
class Row:
    recipe: str
    trainable: int
    total: int
    checkpoint_params: int
    held: int  # parameters in memory: the base, plus LoRA weights, untied / modules_to_save copies

    @property
    def share(self) -> float:
        return self.trainable / self.total

    @property
    def memory_gb(self) -> float:
        return (4 * self.held + 12 * self.trainable) / 1e9

    @property
    def checkpoint_mb(self) -> float:
        return 4 * self.checkpoint_params / 1e6


def _numel(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _lora(model: nn.Module, keep: Callable[[str], bool], r: int = 8) -> int:
    return sum(
        r * (m.in_features + m.out_features)
        for n, m in model.named_modules()
        if isinstance(m, nn.Linear) and keep(n)
    )


def rows(model_id: str) -> list[Row]:
    model = florence2_meta_model(model_id)
    total = _numel(model)  # the tied head counted once
    lm = model.model.language_model
    head, last2, projector = (
        lm.shared.weight.numel(),
        _numel(lm.decoder.layers[-2:]),
        _numel(model.model.multi_modal_projector),
    )
    lora = _lora(model, lambda n: re.fullmatch(LORA_TARGETS, n) is not None)
    n_layers = len(lm.decoder.layers)
    inside = tuple(f"model.language_model.decoder.layers.{i}." for i in (n_layers - 2, n_layers - 1))
    hybrid_lora = _lora(model, lambda n: n.endswith(HYBRID_TARGETS) and not n.startswith(inside))
    saved = head + last2 + projector
    return [
        # lm_head as a LoRA target is untied first: its base weight becomes a second 39M copy
        Row("LoRA r8 q/k/v/fc1/fc2/lm_head (florence2_lora)", lora, total, lora, total + head + lora),
        Row(
            "keyword freeze, lm_head = shared embedding trained (florence2_omniparser_freeze)",
            saved,
            total,
            total,
            total,
        ),
        Row("keyword freeze, lm_head left frozen", last2 + projector, total, total, total),
        Row(
            "keyword freeze + LoRA r8 q/v (florence2_omniparser_hybrid)",
            saved + hybrid_lora,
            total,
            saved + hybrid_lora,
            total + saved + hybrid_lora,
        ),
        Row("full fine-tune", total, total, total, total),
    ]


def render(model_ids: tuple[str, ...] = (FLORENCE2_BASE, FLORENCE2_LARGE)) -> str:
    lines = [
        "| model | recipe | trainable | trainable % | memory estimate | checkpoint |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for model_id in model_ids:
        for row in rows(model_id):
            lines.append(
                f"| {model_id.split('/')[-1]} | {row.recipe} | {row.trainable:,} | {100 * row.share:.2f}% | "
                f"{row.memory_gb:.2f} GB | {row.checkpoint_mb:,.1f} MB |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    print(render())
