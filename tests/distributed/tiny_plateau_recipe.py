"""`tiny_recipe.py` with a plateau stage: its second stage opens when the score stalls (kill/resume test).

Early stopping's min_delta is beyond any ROUGE-L, so no evaluation after the first improves: stage 0 opens at
step 4 (epoch 1), the plateau stage at the second evaluation (step 8), with a 2-step LR re-warm-up.
"""

import dataclasses
import runpy
from pathlib import Path

from trainers.recipe import Stage

_base = runpy.run_path(str(Path(__file__).with_name("tiny_recipe.py")))["recipe"]
recipe = dataclasses.replace(
    _base,
    name="tiny_dist_plateau",
    stages=[
        *_base.stages,
        Stage(on_plateau=True, patience=1, unfreeze="vision_model.encoder.layers[-3:]", warmup_steps=2),
    ],
    early_stopping=dataclasses.replace(_base.early_stopping, min_delta=1e3),
)
