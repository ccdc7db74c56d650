"""`tiny_recipe.py` with a plateau stage: its second stage opens when the score stalls (kill/resume test).

Early stopping's min_delta is beyond any ROUGE-L, so no evaluation after the first improves: stage 0 opens at
step 4 (epoch 1), the plateau stage at the second evaluation (step 8), with a 2-step LR re-warm-up.
"""

from pathlib import Path

from trainers.models.blip import TinyBlipSpec
from trainers.recipe import (
    CaptionData,
    EarlyStopping,
    Evaluation,
    Freeze,
    Model,
    ParamGroup,
    Recipe,
    Reporting,
    Stage,
    Training,
    Unfreeze,
)

SHAPES = Path(__file__).resolve().parents[2] / "data" / "shapes"

recipe = Recipe(
    name="tiny_dist_plateau",
    model=Model(id="tiny", family="blip", demo=TinyBlipSpec(), use_demo_model=True),
    data=CaptionData(
        train=str(SHAPES / "train.json"),
        val=str(SHAPES / "val.json"),
        images=str(SHAPES / "images"),
        max_train_samples=32,
        max_val_samples=8,
    ),
    freeze=[Freeze("vision_model"), Unfreeze("vision_model.encoder.layers[-1:]")],
    stages=[
        Stage(epoch=1, unfreeze="vision_model.encoder.layers[-2:]"),
        Stage(on_plateau=True, patience=1, unfreeze="vision_model.encoder.layers[-3:]", warmup_steps=2),
    ],
    param_groups=[ParamGroup("vision", match=r"^vision_model\.", lr_mult=0.1)],
    training=Training(epochs=2, batch_size=4, lr=1e-3, logging_steps=1, resume="never"),
    evaluation=Evaluation(metrics=("rouge_l",), num_beams=2, max_length=12, batch_size=4),
    early_stopping=EarlyStopping(metric="rouge_l", patience=2, mode="max", min_delta=1e3),
    reporting=Reporting(wandb=False, plots=False),
)
