"""A YAML config file of recipe settings (`config/clip.yaml`), validated exactly like `key=value` overrides.

Nested mappings become dotted keys (`encoder_configs: {text: {freeze_layers: 4}}` is
`encoder_configs.text.freeze_layers=4`); each scalar goes through the overrides' own parser and type check
(`trainers.recipe.overrides.set_by_path`) as the text written in the file, so an unknown key gets the
closest valid ones and a wrong type says which, and every error names the file and line. A list value is
joined with commas, as on the command line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainers.errors import RecipeError
from trainers.recipe.overrides import record_source, set_by_path
from trainers.text_files import read_utf8


def read_settings(path: str | Path) -> list[tuple[str, str, int]]:
    """(dotted key, value as written, 1-based line) for every leaf of the file's top-level mapping."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise RecipeError(
            f"Config file {str(path)!r} does not exist. Pass an existing YAML file to --config "
            "(e.g. config/clip.yaml), or config=none for the recipe's own values."
        )
    try:
        root = yaml.compose(read_utf8(path, RecipeError, "--config"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise RecipeError(
            f"{path}{line}: malformed YAML ({problem}). Fix the file: `key: value` lines, "
            "nested by indentation (e.g. encoder_configs:\\n  text:\\n    freeze_layers: 4)."
        ) from None
    if root is None:
        return []
    if not isinstance(root, yaml.MappingNode):
        raise RecipeError(
            f"{path}:{root.start_mark.line + 1}: the file must be a mapping of recipe keys "
            "(e.g. encoder_configs:, training:), not a single value or a list."
        )
    out: list[tuple[str, str, int]] = []
    _walk(root, "", path, out)
    return out


def _walk(node: Any, prefix: str, path: Path, out: list[tuple[str, str, int]]) -> None:
    import yaml

    for key_node, value_node in node.value:
        key = f"{prefix}{key_node.value}"
        line = key_node.start_mark.line + 1
        if isinstance(value_node, yaml.MappingNode):
            _walk(value_node, f"{key}.", path, out)
        elif isinstance(value_node, yaml.SequenceNode):
            items = [item.value for item in value_node.value if isinstance(item, yaml.ScalarNode)]
            if len(items) != len(value_node.value):
                raise RecipeError(f"{path}:{line}: {key}: a list of plain values is expected.")
            out.append((key, ",".join(items), line))
        else:
            out.append(
                (key, value_node.value if value_node.tag != "tag:yaml.org,2002:null" else "none", line)
            )


def apply_config_file(recipe: Any, path: str | Path) -> list[tuple[str, Any]]:
    """Set every key of the YAML file on the recipe; errors name the file, line and key."""
    applied = []
    for key, raw, line in read_settings(path):
        where = f"{path}:{line}"
        try:
            applied.append((key, set_by_path(recipe, key, raw)))
        except RecipeError as exc:
            message = str(exc).replace("Run with --dry-run to see the resolved recipe.", "").strip()
            message = message.replace("Unknown override key", "unknown key").replace("Override ", "")
            raise RecipeError(f"{where}: {message} Fix the key in {path}.") from None
        record_source(recipe, key, where)
    return applied
