"""Checks of files a recipe points at that need no model and no torch (fast, before any launch).

Today: the DeepSpeed JSON config (exists, parses, is an object). Later tasks add theirs here.
"""

from __future__ import annotations

import json
from pathlib import Path

from trainers.errors import RecipeError


def check_deepspeed_config(path: str | None) -> None:
    if path is None:
        return
    file = Path(path)
    fix = "Point launch.deepspeed_config (or --deepspeed) at a DeepSpeed JSON config file, or use --zero 1/2/3."
    if not file.is_file():
        raise RecipeError(f"launch.deepspeed_config: {path!r} does not exist. {fix}")
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise RecipeError(
            f"{path}:{error.lineno}: the DeepSpeed config is not valid JSON ({error.msg} at column {error.colno}). "
            "Fix the syntax there (JSON allows no trailing commas or comments)."
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise RecipeError(f"launch.deepspeed_config: cannot read {path!r} ({error}). {fix}") from None
    if not isinstance(config, dict):
        raise RecipeError(
            f"{path}: the DeepSpeed config must be a JSON object (e.g. {{\"zero_optimization\": {{\"stage\": 2}}}}), "
            f"not a JSON {type(config).__name__}. Fix the file."
        )


def check_launch(launch) -> None:
    """Launch options that contradict each other or cannot work, caught before anything starts."""
    for key in ("nproc", "nnodes"):
        if getattr(launch, key) < 1:
            raise RecipeError(f"launch.{key} must be >= 1, got {getattr(launch, key)} (--{key.replace('_', '-')}).")
    if not 0 <= launch.node_rank < launch.nnodes:
        raise RecipeError(
            f"launch.node_rank={launch.node_rank} is outside 0..{launch.nnodes - 1} (launch.nnodes={launch.nnodes}). "
            "Give each node a rank from 0 to nnodes-1 (--node-rank)."
        )
    if launch.offload and launch.zero not in (2, 3):
        raise RecipeError(
            f"launch.offload=true needs ZeRO stage 2 or 3, but launch.zero={launch.zero}: ZeRO CPU offload "
            "moves optimizer state (stage 2) and parameters (stage 3). Add --zero 2 or --zero 3, or drop --offload."
        )
