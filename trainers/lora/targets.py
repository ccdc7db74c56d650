"""Which modules LoRA targets, resolved the way peft matches them, validated before any wrapping.

peft matches a `target_modules` list entry against a module path by equality or by suffix after a dot
(`query` hits `...attention.self.query`); a regex string is matched against the whole path. A target
that hits nothing is a recipe error naming the nearest module names of the kinds LoRA supports.
"""

from __future__ import annotations

import difflib
import re
from collections import defaultdict
from dataclasses import dataclass, field

from torch import nn

from trainers.errors import FreezeTargetError
from trainers.recipe.config import Lora


def _supported_types() -> tuple[type, ...]:
    types: list[type] = [nn.Linear, nn.Embedding, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.MultiheadAttention]
    try:
        from transformers.pytorch_utils import Conv1D

        types.append(Conv1D)
    except ImportError:  # pragma: no cover
        pass
    return tuple(types)


SUPPORTED = _supported_types()


def supported_leaf_modules(model: nn.Module) -> dict[str, str]:
    """path → class name of every module LoRA can wrap (Linear, Conv1d/2d/3d, Embedding, GPT-2 Conv1D, ...)."""
    return {name: type(m).__name__ for name, m in model.named_modules() if name and isinstance(m, SUPPORTED)}


def _entry_matches(entry: str, path: str) -> bool:
    return path == entry or path.endswith("." + entry)


@dataclass
class TargetMatch:
    """The resolved LoRA targets: module paths, grouped by top-level module (tower)."""

    modules: list[str]
    by_entry: dict[str, list[str]] = field(default_factory=dict)

    def by_tower(self) -> dict[str, list[str]]:
        towers: dict[str, list[str]] = defaultdict(list)
        for path in self.modules:
            towers[path.split(".")[0]].append(path)
        return dict(towers)


def resolve_targets(model: nn.Module, lora: Lora) -> TargetMatch:
    """Module paths LoRA will wrap. Errors (with nearest supported names) when an entry matches nothing."""
    supported = supported_leaf_modules(model)
    all_paths = [n for n, _ in model.named_modules() if n]
    if lora.target_regex is not None:
        pattern = re.compile(lora.target_regex)
        hits = [p for p in all_paths if pattern.fullmatch(p)]
        _check_kinds(model, hits, f"lora.target_regex {lora.target_regex!r}", supported)
        _check_grouped_convs(model, hits, f"lora.target_regex {lora.target_regex!r}", lora.r)
        if not hits:
            raise FreezeTargetError(
                f"lora.target_regex {lora.target_regex!r} matches no module path of {type(model).__name__} "
                f"(peft matches it against the whole path, e.g. r'.*\\.query'). {_nearest_hint(lora.target_regex, supported)}"
            )
        return TargetMatch(hits, {lora.target_regex: hits})
    by_entry: dict[str, list[str]] = {}
    for entry in lora.target_modules:
        hits = [p for p in all_paths if _entry_matches(entry, p)]
        if not hits:
            raise FreezeTargetError(
                f"lora.target_modules entry {entry!r} matches no module of {type(model).__name__}. "
                f"{_nearest_hint(entry, supported)}"
            )
        _check_kinds(model, hits, f"lora.target_modules entry {entry!r}", supported)
        _check_grouped_convs(model, hits, f"lora.target_modules entry {entry!r}", lora.r)
        by_entry[entry] = hits
    modules = [p for p in all_paths if any(p in hits for hits in by_entry.values())]
    return TargetMatch(modules, by_entry)


# A module whose weight its parent reads directly (`module.weight`) never runs its own forward, so a LoRA
# layer around it changes nothing; a family marks such modules with this attribute, the reason as its value.
LORA_NOOP_ATTRIBUTE = "lora_noop_reason"


def _check_kinds(model: nn.Module, hits: list[str], what: str, supported: dict[str, str]) -> None:
    for path in hits:
        reason = getattr(model.get_submodule(path), LORA_NOOP_ATTRIBUTE, None)
        if reason:
            raise FreezeTargetError(
                f"{what} matches {path!r}, where LoRA would do nothing: {reason} Remove it from the LoRA "
                f"targets; to train it, list it in lora.modules_to_save or add Unfreeze({path!r})."
            )
    wrong = [p for p in hits if p not in supported]
    if wrong:
        kind = type(model.get_submodule(wrong[0])).__name__
        inside = sorted({p.rsplit(".", 1)[-1] for p in supported if p.startswith(wrong[0] + ".")})
        below = f" Its LoRA-capable submodules are named: {', '.join(inside[:8])}." if inside else ""
        raise FreezeTargetError(
            f"{what} matches {wrong[0]!r} ({len(wrong)} module(s) in all), a {kind}, which LoRA cannot wrap: "
            f"targets must be Linear, Conv1d/2d/3d, Embedding or Conv1D layers.{below}"
        )


def _check_grouped_convs(model: nn.Module, hits: list[str], what: str, r: int) -> None:
    """peft wraps a grouped conv (groups > 1: depthwise convs) only when r divides by its groups, and never merges
    it; say which matched convs qualify (groups == 1, e.g. patch embeddings) and why the others do not."""
    convs = {
        p: model.get_submodule(p)
        for p in hits
        if isinstance(model.get_submodule(p), nn.Conv1d | nn.Conv2d | nn.Conv3d)
    }
    refused = {p: m.groups for p, m in convs.items() if m.groups > 1 and r % m.groups}
    if not refused:
        return
    first, groups = next(iter(refused.items()))
    qualify = [p for p, m in convs.items() if m.groups == 1]
    all_convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Conv3d)]
    elsewhere = [n for n in all_convs if n not in convs and model.get_submodule(n).groups == 1]
    ok = qualify or elsewhere
    shown = ", ".join(ok[:6]) + (f" and {len(ok) - 6} more" if len(ok) > 6 else "") if ok else "none"
    raise FreezeTargetError(
        f"{what} matches {len(refused)} grouped convolution(s) that LoRA cannot take, first {first!r} "
        f"(groups={groups}, a depthwise conv: one filter per channel): peft wraps a conv with groups > 1 only when "
        f"lora.r ({r}) is divisible by its groups, and cannot merge it. Convs with groups=1 qualify: {shown}. "
        "Target those by full path (lora.target_regex), or leave convolutions out of the LoRA targets."
    )


def _nearest_hint(query: str, supported: dict[str, str], n: int = 6) -> str:
    short: dict[str, str] = {}
    for path, kind in supported.items():
        short.setdefault(path.rsplit(".", 1)[-1], kind)
    names = list(short)
    close = difflib.get_close_matches(query, names, n=n, cutoff=0.4)
    close += [p for p in difflib.get_close_matches(query, list(supported), n=3, cutoff=0.4) if p not in close]
    if not close:
        close = sorted(names)[:n]
    listed = ", ".join(f"{c} ({short.get(c) or supported[c]})" for c in close)
    return f"Nearest LoRA-capable module names: {listed}. All LoRA-capable names: {', '.join(sorted(names))}."
