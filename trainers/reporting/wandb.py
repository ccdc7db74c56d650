"""W&B wiring: offline by default (no account needed), files under the run's output dir.

The Trainer's own `WandbCallback` does the logging; this module only sets its environment and adds
the resolved recipe to the run config.
"""

from __future__ import annotations

import os
import secrets
import string
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


WANDB_RUN_ID_FILE = "wandb_run_id"


def persist_wandb_run_id(output_dir: Path, resuming: bool) -> str:
    """Keep one W&B run per output dir across restarts (a requeued Slurm job continues the same run).

    A resumed run reuses the id stored in the output dir (`resume="allow"`); a fresh start gets a new id.
    """
    path = output_dir / WANDB_RUN_ID_FILE
    run_id = path.read_text().strip() if resuming and path.is_file() else ""
    if not run_id:
        run_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
        path.write_text(run_id + "\n")
    os.environ["WANDB_RUN_ID"] = run_id
    os.environ["WANDB_RESUME"] = "allow"
    return run_id


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
