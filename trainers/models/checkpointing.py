"""Gradient (activation) checkpointing for any family, through transformers' own layer checkpointing.

`training.gradient_checkpointing=true` switches on transformers' checkpointing of every repeated layer
(`GradientCheckpointingLayer`), always non-reentrant: the reentrant variant loses the graph when a
checkpointed layer's inputs do not require grad (a frozen embedding under a LoRA or partly frozen model),
and then silently trains nothing in that layer. The non-reentrant variant needs no
`enable_input_require_grads` hook for LoRA / QLoRA, and replays dropout with the same RNG state, so a step
with checkpointing gives the same loss and gradients as one without (`tests/test_gradient_checkpointing.py`).

A composite model whose root does not declare support (`VisionTextDualEncoderModel`) gets it switched on in
each tower that does. Parts transformers does not checkpoint (a ResNet or DaViT backbone) keep their
activations: the plan names them. A model with no checkpointable layer at all is refused before training.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from torch import nn

from trainers.errors import RecipeError
from trainers.models.submodels import pretrained_submodels

KWARGS = {"use_reentrant": False}


@dataclass(frozen=True)
class CheckpointingPlan:
    """What checkpointing covers in one model: the layers it recomputes and the sub-models it leaves alone."""

    models: tuple[str, ...]  # the pretrained (sub-)models it is switched on in ("" = the whole model)
    layers: tuple[str, ...]  # the layers recomputed in backward
    uncovered: tuple[str, ...]  # sub-models (path: class) transformers has no checkpointing for

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "reentrant": False}

    def render(self) -> str:
        where = ", ".join(m or "the whole model" for m in self.models)
        line = f"gradient checkpointing: on (non-reentrant), {len(self.layers)} layers recomputed in backward ({where})"
        if self.uncovered:
            line += f"; not checkpointed (no support in transformers): {', '.join(self.uncovered)}"
        return line


def checkpointing_plan(model: nn.Module) -> CheckpointingPlan:
    """What `enable` would checkpoint (works on the meta device: nothing runs)."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    roots: list[str] = []  # outermost supporting (sub-)models: switching one on covers everything inside it
    for name, module in pretrained_submodels(model):
        if module.supports_gradient_checkpointing and not any(_within(name, r) for r in roots):
            roots.append(name)
    layers = [
        n
        for n, m in model.named_modules()
        if isinstance(m, GradientCheckpointingLayer)
        and any(_within(n, r) for r in roots)
        and not _inside_layer(n, model)
    ]
    uncovered = tuple(
        f"{name} ({type(module).__name__})"
        for name, module in pretrained_submodels(model)
        if name
        and not any(layer.startswith(name + ".") for layer in layers)
        and not any(name.startswith(layer + ".") for layer in layers)
        and any(True for _ in module.parameters())
    )
    return CheckpointingPlan(tuple(roots), tuple(layers), uncovered)


def _within(name: str, prefix: str) -> bool:
    """Whether module path `name` is `prefix` or inside it ("" is the whole model)."""
    return prefix == "" or name == prefix or name.startswith(prefix + ".")


def _inside_layer(name: str, model: nn.Module) -> bool:
    """A checkpointing layer nested in another: only the outermost one recomputes."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    parts = name.split(".")
    for i in range(1, len(parts)):
        if isinstance(model.get_submodule(".".join(parts[:i])), GradientCheckpointingLayer):
            return True
    return False


def enable(model: nn.Module, where: str = "training.gradient_checkpointing") -> CheckpointingPlan:
    """Switch on non-reentrant checkpointing in every (sub-)model that supports it; refuse when none does."""
    plan = checkpointing_plan(model)
    if not plan.layers:
        raise RecipeError(
            f"{where}=true: {type(model).__name__} has no layer that transformers can checkpoint "
            f"(no sub-model declares supports_gradient_checkpointing with GradientCheckpointingLayer blocks"
            f"{'; ' + ', '.join(plan.uncovered) if plan.uncovered else ''}), so checkpointing would save no "
            f"memory. Set {where}=false and fit memory another way: a smaller training.batch_size with a "
            "larger training.grad_accum, LoRA, or --zero 2/3 (with --offload)."
        )
    for name in plan.models:
        module = model.get_submodule(name) if name else model
        switch = getattr(module, "activation_checkpointing_enable", None)
        if switch is not None:
            switch(activation_checkpointing_kwargs=dict(KWARGS))
        else:  # transformers before the rename
            module.gradient_checkpointing_enable(gradient_checkpointing_kwargs=dict(KWARGS))
    return plan


def checkpointed_layers(model: nn.Module) -> list[nn.Module]:
    """The outermost layers that recompute in backward right now (checkpointing switched on)."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    out: list[nn.Module] = []
    inside: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(p + ".") for p in inside):
            continue
        if isinstance(module, GradientCheckpointingLayer) and module.gradient_checkpointing:
            out.append(module)
            inside.append(name)
    return out
