"""Resolve a target expression to the parameters it selects.

Syntax: a dotted module path where any component may be indexed or sliced when the module is a
layer list (`vision_model.encoder.layers[-3:]`, `text_decoder.bert.encoder.layer[0]`), `*` for the
whole model, or a regular expression searched in parameter names. Tied parameters (an LM head
sharing the word embedding) are one tensor: they are reported under their canonical (first) name.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator

from torch import nn

from trainers.errors import FreezeTargetError

_COMPONENT = re.compile(r"^(?P<name>[^\[\]]+)(?P<index>\[[^\]]*\])?$")


def canonical_names(model: nn.Module) -> dict[int, str]:
    """id(parameter) → its first name in `named_parameters()` (tied aliases share one entry)."""
    names: dict[int, str] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(param), name)
    return names


def tied_aliases(model: nn.Module) -> dict[str, list[str]]:
    """canonical name → other names of the same tensor (e.g. an LM head tied to the embedding)."""
    canonical = canonical_names(model)
    aliases: dict[str, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        first = canonical[id(param)]
        if name != first:
            aliases.setdefault(first, []).append(name)
    return aliases


def select_parameters(
    model: nn.Module, target: str | None = None, regex: str | None = None, within: str | None = None
) -> list[str]:
    """Canonical names of the parameters a target selects, in model order. Empty selection is an error.

    `within` (a module path) makes `regex` search the names relative to that module.
    """
    canonical = canonical_names(model)
    if regex is not None:
        pattern = re.compile(regex)
        prefix = ""
        if within is not None:
            resolve_modules(model, within)  # a wrong scope is an error naming the nearest modules
            prefix = within.rstrip(".") + "."
        scoped = [
            (n.removeprefix(prefix), p)
            for n, p in model.named_parameters(remove_duplicate=False)
            if n.startswith(prefix)
        ]
        names = [canonical[id(p)] for n, p in scoped if pattern.search(n)]
        if not names:
            where = f" in {within}" if within is not None else ""
            raise FreezeTargetError(
                f"regex {regex!r} matches no parameter name{where}. Nearest parameter names{where}: "
                f"{', '.join(_nearest(regex, list(dict.fromkeys(n for n, _ in scoped))))}."
            )
        return _unique(names)
    assert target is not None
    modules = resolve_modules(model, target)
    names = [canonical[id(p)] for module in modules for p in module.parameters()]
    if not names:
        raise FreezeTargetError(f"target {target!r} selects modules that have no parameters.")
    return _unique(names)


def resolve_modules(model: nn.Module, target: str) -> list[nn.Module]:
    """The modules a dotted (optionally sliced) path names."""
    if target.strip() in ("*", ""):
        return [model]
    current: list[tuple[str, nn.Module]] = [("", model)]
    for component in target.split("."):
        match = _COMPONENT.match(component.strip())
        if match is None:
            raise FreezeTargetError(
                f"target {target!r}: cannot parse {component!r} (expected name or name[i] / name[a:b])."
            )
        step: list[tuple[str, nn.Module]] = []
        for path, module in current:
            child_path = f"{path}.{match['name']}" if path else match["name"]
            child = getattr(module, match["name"], None) if isinstance(module, nn.Module) else None
            if not isinstance(child, nn.Module):
                raise FreezeTargetError(
                    f"target {target!r}: {child_path!r} is not a module of {type(model).__name__}. "
                    f"Nearest module paths: {', '.join(_nearest(child_path, _module_paths(model)))}."
                )
            if match["index"]:
                step.extend(_index(child, child_path, match["index"], target))
            else:
                step.append((child_path, child))
        current = step
    if not current:
        raise FreezeTargetError(f"target {target!r} selects no module (empty slice).")
    return [module for _, module in current]


def _index(container: nn.Module, path: str, index: str, target: str) -> Iterator[tuple[str, nn.Module]]:
    if not isinstance(container, nn.ModuleList | nn.Sequential):
        raise FreezeTargetError(
            f"target {target!r}: {path!r} is a {type(container).__name__}, not a layer list, so it "
            "cannot be indexed."
        )
    spec = index[1:-1].strip()
    items = list(container)
    try:
        if ":" in spec:
            bounds = [int(b) if b.strip() else None for b in spec.split(":")]
            chosen = range(len(items))[slice(*bounds)]
        else:
            position = int(spec)
            chosen = [range(len(items))[position]]
    except (ValueError, IndexError):
        raise FreezeTargetError(
            f"target {target!r}: {index} is not a valid index/slice of {path!r} ({len(items)} layers)."
        ) from None
    for i in chosen:
        yield f"{path}.{i}", items[i]


def _module_paths(model: nn.Module) -> list[str]:
    return [name for name, _ in model.named_modules() if name]


def _nearest(query: str, candidates: list[str], n: int = 5) -> list[str]:
    close = difflib.get_close_matches(query, candidates, n=n, cutoff=0.3)
    if close:
        return close
    short = sorted({c.split(".")[0] for c in candidates})
    return short[:n]


def _unique(names: list[str]) -> list[str]:
    return list(dict.fromkeys(names))
