"""Plan records that several mechanics read: kept below `freezing/`, `optim/` and `lora/` so none of them
imports another for a record.

A `StagePlan` is made by `freezing.progressive.resolve_stages` (which parameters a stage unfreezes), given its
optimizer groups by `optim.param_groups.build_param_groups`, read by `lora.apply` (stage targets stay trainable)
and acted on by the `ProgressiveUnfreezing` callback. Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class StagePlan:
    """One resolved stage: which parameters it newly unfreezes and which optimizer groups hold them."""

    index: int
    epoch: int | None
    targets: tuple[str, ...]
    lr_mult: float | None
    param_names: list[str]
    num_params: int
    group_indices: list[int] = field(default_factory=list)
    group_weight_decay: dict[int, float] = field(default_factory=dict)
    step: int | None = None
    on_plateau: bool = False
    patience: int | None = None  # a plateau stage's (its own, else the early-stopping patience)
    warmup_steps: int = 0

    @property
    def trigger(self) -> str:
        """What opens the stage: `epoch 3`, `step 40`, `plateau (patience 2)`."""
        if self.on_plateau:
            return f"plateau (patience {self.patience})"
        return f"step {self.step}" if self.step is not None else f"epoch {self.epoch}"

    def to_dict(self) -> dict:
        return {
            "stage": self.index,
            "trigger": self.trigger,
            "epoch": self.epoch,
            "step": self.step,
            "on_plateau": self.on_plateau,
            "patience": self.patience,
            "warmup_steps": self.warmup_steps,
            "unfreeze": list(self.targets),
            "lr_mult": self.lr_mult,
            "tensors": len(self.param_names),
            "params": self.num_params,
            "optimizer_groups": self.group_indices,
        }
