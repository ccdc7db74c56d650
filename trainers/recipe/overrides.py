"""`key=value` overrides on a recipe: dotted paths, typed by the dataclass fields, validated.

`training.epochs=3`, `data.train=/data/train.json`, `evaluation.metrics=meteor,cider_d`,
`param_groups.0.lr_mult=0.2`, `early_stopping=none`, one entry of a dict-valued field
(`data.extra_val.hard=/data/hard_val`, `demo.training.epochs=3`). An unknown key fails with the closest valid keys.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Iterable
from typing import Any, Literal, Union, get_args, get_origin

from trainers.errors import RecipeError

_NONE_WORDS = {"none", "null", "~"}
_TRUE_WORDS = {"true", "yes", "on", "1"}
_FALSE_WORDS = {"false", "no", "off", "0"}


def parse_override(text: str) -> tuple[str, str]:
    """Split `key=value`; the key must be a dotted path."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise RecipeError(
            f"Override {text!r} is not of the form key=value (e.g. training.epochs=3). "
            "Run with --dry-run to see the resolved recipe."
        )
    return key, value.strip()


def apply_overrides(recipe: Any, overrides: Iterable[str]) -> list[tuple[str, Any]]:
    """Apply each override in order; returns (key, typed value) pairs for the plan."""
    applied = []
    for text in overrides:
        key, raw = parse_override(text)
        applied.append((key, set_by_path(recipe, key, raw)))
        record_source(recipe, key, "command line")
    return applied


_SOURCES = "_setting_sources"


def record_source(recipe: Any, key: str, where: str) -> None:
    """Remember where `key` was last set (`config/clip.yaml:7`, `command line`) for later error messages."""
    sources = recipe.__dict__.setdefault(_SOURCES, {})
    sources[key] = where


def setting_source(recipe: Any, key: str) -> str:
    """Where `key` was set (a YAML file and line, the command line); "" when it is the recipe file's value."""
    return getattr(recipe, _SOURCES, {}).get(key, "")


def set_by_path(root: Any, key: str, raw: Any) -> Any:
    """Set `key` (dotted) on a dataclass tree; `raw` is a string from the CLI or an already typed value."""
    parts = key.split(".")
    parent: Any = root
    hint: Any = None  # the declared type of `parent` (a dict field's says the type of its values)
    for depth, part in enumerate(parts[:-1]):
        if isinstance(parent, dict):
            return _set_entry(parent, hint, parts[depth:], ".".join(parts[:depth]), key, raw)
        hint = _field_hints(parent).get(part) if dataclasses.is_dataclass(parent) else None
        parent = _child(parent, part, ".".join(parts[: depth + 1]), key, root)
    if isinstance(parent, dict):
        return _set_entry(parent, hint, parts[-1:], ".".join(parts[:-1]), key, raw)
    leaf = parts[-1]
    if isinstance(parent, list):
        index = _list_index(parent, leaf, key)
        value = _coerce(raw, type(parent[index]), key) if isinstance(raw, str) else raw
        parent[index] = value
        return value
    hints = _field_hints(parent)
    if leaf not in hints:
        raise RecipeError(_unknown_key_message(key, root))
    value = _coerce(raw, hints[leaf], key) if isinstance(raw, str) else raw
    try:
        setattr(parent, leaf, value)
    except dataclasses.FrozenInstanceError:
        parent_path = key.rsplit(".", 1)[0]
        raise RecipeError(
            f"Override {key!r}: {parent_path} is an immutable rule; change it in the recipe file."
        ) from None
    return value


def _set_entry(mapping: dict, hint: Any, rest: list[str], field_key: str, key: str, raw: Any) -> Any:
    """One entry of a dict-valued field: `data.extra_val.NAME=DIR` (typed by the dict's value type), or
    `demo.KEY=VALUE` (values of any type: the whole rest of the key is the entry's name, e.g.
    `demo.training.epochs=3`, typed when `--demo` applies it)."""
    value_hint = _dict_value_type(hint)
    name = ".".join(rest) if value_hint is Any else rest[0]
    if not name or (value_hint is not Any and len(rest) > 1):
        raise RecipeError(
            f"Override {key!r}: {field_key} is a mapping; set one whole entry with {field_key}.NAME=VALUE "
            f"(entries now: {', '.join(map(str, mapping)) or 'none'}), or change the entry's fields in the "
            "recipe file."
        )
    value = _coerce(raw, value_hint, key) if isinstance(raw, str) and value_hint is not Any else raw
    mapping[name] = value
    return value


def _dict_value_type(hint: Any) -> Any:
    """`V` of a `dict[str, V]` hint (also inside `X | None`); Any when undeclared."""
    if get_origin(hint) in (Union, types.UnionType):
        hint = next((a for a in get_args(hint) if get_origin(a) is dict or a is dict), hint)
    args = get_args(hint)
    return args[1] if get_origin(hint) is dict and len(args) == 2 else Any


def valid_keys(root: Any, prefix: str = "") -> list[str]:
    """Every overridable dotted key under `root` (list items by index)."""
    keys: list[str] = []
    if isinstance(root, list):
        for i, item in enumerate(root):
            keys.extend(valid_keys(item, f"{prefix}{i}."))
        return keys
    if not dataclasses.is_dataclass(root):
        return keys
    for name in _field_hints(root):
        value = getattr(root, name)
        path = f"{prefix}{name}"
        keys.append(path)
        if dataclasses.is_dataclass(value) or isinstance(value, list):
            keys.extend(valid_keys(value, f"{path}."))
    return keys


def _child(parent: Any, part: str, path: str, key: str, root: Any) -> Any:
    if isinstance(parent, list):
        return parent[_list_index(parent, part, path)]
    if not dataclasses.is_dataclass(parent) or part not in _field_hints(parent):
        raise RecipeError(_unknown_key_message(key, root))
    child = getattr(parent, part)
    if child is None:
        raise RecipeError(
            f"Override {path!r}: this section is not set in the recipe (it is None); "
            "declare it in the recipe file before overriding its fields."
        )
    return child


def _list_index(items: list, part: str, path: str) -> int:
    try:
        index = int(part)
        items[index]  # noqa: B018 - bounds check
    except (ValueError, IndexError):
        raise RecipeError(
            f"Override {path!r}: {part!r} is not a valid index into a list of {len(items)} item(s)."
        ) from None
    return index


def _field_hints(obj: Any) -> dict[str, Any]:
    hints = typing.get_type_hints(type(obj))
    return {f.name: hints[f.name] for f in dataclasses.fields(obj) if f.name in hints}


def _unknown_key_message(key: str, root: Any) -> str:
    keys = valid_keys(root)
    close = difflib.get_close_matches(key, keys, n=3, cutoff=0.5)
    if not close:
        leaf = key.rsplit(".", 1)[-1]
        close = [k for k in keys if k.rsplit(".", 1)[-1] == leaf][:3]
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    sections = sorted({k.split(".")[0] for k in keys})
    return (
        f"Unknown override key {key!r}.{hint} Top-level sections: {', '.join(sections)}. "
        "Run with --dry-run to see the resolved recipe."
    )


def _coerce(raw: str, hint: Any, key: str) -> Any:
    """Turn a CLI string into the field's declared type, or explain why it can't be."""
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        if raw.lower() in _NONE_WORDS and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(raw, option, key)
            except RecipeError as exc:
                errors.append(str(exc))
        raise RecipeError(
            errors[0] if len(errors) == 1 else f"Override {key}={raw!r}: no type fits ({hint})."
        )
    if origin is Literal:
        for option in args:
            if str(option) == raw:
                return option
        raise RecipeError(f"Override {key}={raw!r}: must be one of {', '.join(map(str, args))}.")
    if origin in (list, tuple):
        item_type = args[0] if args else str
        items = [s.strip() for s in raw.split(",") if s.strip()]
        values = [_coerce(s, item_type, key) for s in items]
        return tuple(values) if origin is tuple else values
    if hint is bool:
        if raw.lower() in _TRUE_WORDS:
            return True
        if raw.lower() in _FALSE_WORDS:
            return False
        raise RecipeError(f"Override {key}={raw!r}: expected a boolean (true/false).")
    if hint is int:
        try:
            return int(raw.replace("_", ""))
        except ValueError:
            raise RecipeError(f"Override {key}={raw!r}: expected an integer.") from None
    if hint is float:
        try:
            return float(raw)
        except ValueError:
            raise RecipeError(f"Override {key}={raw!r}: expected a number (e.g. 3e-5).") from None
    if hint is str:
        return raw
    if hint is Any:
        return raw
    if origin is dict or hint is dict:
        raise RecipeError(
            f"Override {key!r} is a mapping: set one entry with {key}.NAME=VALUE (e.g. "
            f"data.extra_val.hard=/data/hard_val, demo.training.epochs=3)."
        )
    raise RecipeError(
        f"Override {key!r}: fields of type {getattr(hint, '__name__', hint)} cannot be set from the "
        "command line; change them in the recipe file."
    )
