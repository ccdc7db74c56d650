"""W&B wiring: offline by default (no account needed), files under the run's output dir.

The Trainer's own `WandbCallback` does the logging; this module only sets its environment and adds
the resolved recipe to the run config.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from trainers.recipe.config import Reporting
from trainers.reporting.redact import redact


def configure_wandb(reporting: Reporting, output_dir: Path) -> list[str]:
    """Set W&B's environment and return the Trainer's `report_to` list."""
    if not reporting.wandb or reporting.wandb_mode == "disabled":
        os.environ["WANDB_MODE"] = "disabled"
        return []
    os.environ.setdefault("WANDB_MODE", reporting.wandb_mode)
    os.environ.setdefault("WANDB_PROJECT", reporting.wandb_project)
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("WANDB_DISABLE_GIT", "true")
    wandb_dir = output_dir
    wandb_dir.mkdir(parents=True, exist_ok=True)
    os.environ["WANDB_DIR"] = str(wandb_dir.resolve())
    return ["wandb"]


class RecipeConfigToWandb(TrainerCallback):
    """Adds the resolved recipe and plan to the W&B run config (after `WandbCallback` started the run)."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        import wandb

        if wandb.run is not None:
            wandb.config.update(redact(self.config), allow_val_change=True)
