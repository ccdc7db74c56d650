"""Where the project's own files live: the one place that computes the checkout's root.

Shipped data (`data/`), DeepSpeed configs (`ds_configs/`), the Slurm template (`slurm/`) and the recipes are
found from here, whatever the working directory of the process that asks.
"""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = PROJECT_ROOT / "data"
RECIPES_DIR = PROJECT_ROOT / "recipes"
DS_CONFIG_DIR = PROJECT_ROOT / "ds_configs"
SLURM_DIR = PROJECT_ROOT / "slurm"
