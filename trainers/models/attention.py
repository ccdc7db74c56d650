"""`model.attn_implementation`: eager, sdpa or flash_attention_2, set through transformers for any family.

The request goes to every sub-model whose transformers class supports it (`_supports_sdpa`,
`_supports_flash_attn`); sub-models without that support keep their own (a ResNet backbone has no attention
at all), and the plan shows what is in effect where. A family none of whose sub-models supports the request
(BLIP's modules implement only eager attention) is refused before training, naming what it supports.
flash_attention_2 also needs the flash-attn package and a CUDA GPU: the run refuses without them; the
dry-run, often made on a machine without a GPU, shows the choice and says it would not run there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from trainers.errors import RecipeError
from trainers.models.submodels import pretrained_submodels

IMPLEMENTATIONS = ("eager", "sdpa", "flash_attention_2")
_FLAG = {"sdpa": "_supports_sdpa", "flash_attention_2": "_supports_flash_attn"}


@dataclass
class AttentionChoice:
    requested: str | None  # None: transformers' default for the model
    in_effect: dict[str, str] = field(default_factory=dict)  # sub-model path ("" = root) -> implementation
    problem: str | None = None  # why the request cannot run on this machine (the run refuses)

    def to_dict(self) -> dict[str, Any]:
        return {"requested": self.requested, "in_effect": self.in_effect, "problem": self.problem}

    def render(self) -> str:
        by_impl: dict[str, list[str]] = {}
        for path, impl in self.in_effect.items():
            by_impl.setdefault(impl, []).append(path or "<model>")
        effect = "; ".join(f"{impl} in {', '.join(paths)}" for impl, paths in by_impl.items())
        if len(by_impl) == 1:
            effect = next(iter(by_impl))
        asked = self.requested or "default"
        line = f"attention: {effect} (model.attn_implementation={asked})"
        if self.problem:
            line += f"; WARNING, a run here would stop: {self.problem}"
        return line


def in_effect(model: nn.Module) -> dict[str, str]:
    """Sub-model path -> attention implementation its config says (each config once)."""
    seen: set[int] = set()
    out: dict[str, str] = {}
    for name, module in pretrained_submodels(model):
        if id(module.config) in seen:
            continue
        seen.add(id(module.config))
        out[name] = str(module.config._attn_implementation)
    return out


def supported(model: nn.Module) -> list[str]:
    """The implementations at least one of the model's sub-models supports."""
    modules = [m for _, m in pretrained_submodels(model)]
    return ["eager"] + [i for i, f in _FLAG.items() if any(getattr(type(m), f, False) for m in modules)]


def _request(model: nn.Module, impl: str) -> str | dict[str, Any]:
    """The argument of `set_attn_implementation`: `impl` for the sub-configs whose model supports it."""
    if impl == "eager":
        return impl
    flag = _FLAG[impl]
    owners = {id(m.config): m for _, m in pretrained_submodels(model)}

    def build(module: nn.Module, config: Any) -> dict[str, Any]:
        request: dict[str, Any] = {
            "": impl if getattr(type(module), flag, False) else config._attn_implementation
        }
        for key in config.sub_configs:
            sub = getattr(config, key, None)
            if sub is None:
                continue
            owner = owners.get(id(sub))
            request[key] = build(owner, sub) if owner is not None else sub._attn_implementation
        return request

    return build(model, model.config)


def set_attention(model: nn.Module, impl: str | None, strict: bool = True) -> AttentionChoice:
    """Apply `model.attn_implementation` (None: leave transformers' choice). `strict=False` (dry-run) records
    a missing package or GPU instead of raising; a family that cannot use `impl` is refused either way."""
    if impl is None:
        return AttentionChoice(None, in_effect(model))
    if impl not in IMPLEMENTATIONS:
        raise RecipeError(
            f"model.attn_implementation={impl!r} is not one of {', '.join(IMPLEMENTATIONS)} (or none for "
            "transformers' default)."
        )
    can = supported(model)
    if impl not in can:
        raise RecipeError(
            f"model.attn_implementation={impl}: {type(model).__name__}'s transformers modules do not implement "
            f"{impl} attention (it supports: {', '.join(can)}). Set model.attn_implementation="
            f"{'sdpa' if 'sdpa' in can else 'eager'} or leave it out for the default."
        )
    problem = None
    try:
        model.set_attn_implementation(_request(model, impl))
    except ImportError as error:  # flash-attn missing, or no CUDA
        problem = (
            f"model.attn_implementation={impl} needs the flash-attn package and a CUDA GPU "
            f"(transformers said: {str(error).splitlines()[0]}). Install flash-attn on a GPU machine, or set "
            "model.attn_implementation=sdpa (PyTorch's fused attention, no extra package)."
        )
        if strict:
            raise RecipeError(problem) from None
    return AttentionChoice(impl, in_effect(model), problem)
