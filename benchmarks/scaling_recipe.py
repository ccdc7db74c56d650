"""The ViT LoRA demo recipe with a step clock: each rank writes its steady-state step times (for `benchmarks.scaling`).

python launch.py benchmarks/scaling_recipe.py --demo launch.launcher=torchrun launch.nproc=2 [launch.zero=2]
"""

import json
import os
import runpy
import time
from pathlib import Path

from transformers import TrainerCallback

from trainers.paths import RECIPES_DIR

STEP_TIMES = "step_times_rank{rank}.json"


class StepTimes(TrainerCallback):
    """Intervals between consecutive `on_step_end` calls within an epoch (its first step excluded)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._last: float | None = None

    def __repr__(self) -> str:  # the recipe's JSON view (and hash) must not hold an address
        return "StepTimes()"

    def on_epoch_begin(self, args, state, control, **kwargs):
        self._last = None

    def on_step_end(self, args, state, control, **kwargs):
        now = time.perf_counter()
        if self._last is not None:
            self.times.append(now - self._last)
        self._last = now

    def on_train_end(self, args, state, control, **kwargs):
        rank = int(os.environ.get("RANK", "0"))
        path = Path(args.output_dir).parent / STEP_TIMES.format(rank=rank)
        path.write_text(
            json.dumps(
                {
                    "rank": rank,
                    "world_size": args.world_size,
                    "times": self.times,
                    "batch_size": args.per_device_train_batch_size,
                }
            )
        )


recipe = runpy.run_path(str(RECIPES_DIR / "vit_lora.py"))["recipe"]
recipe.name = "vit_lora_scaling"
recipe.callbacks = [StepTimes()]
