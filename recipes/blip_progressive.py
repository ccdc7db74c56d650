"""BLIP captioning with progressive unfreezing of the vision tower.

The vision encoder starts frozen except its last 3 layers; more layers thaw as training goes on.
The text decoder trains from the start at the full learning rate, the vision tower at a tenth of it.
Early stopping watches the mean of METEOR, ROUGE-L and CIDEr-D and keeps the best checkpoint.

    accelerate launch launch.py recipes/blip_progressive.py
    python launch.py recipes/blip_progressive.py --demo          # tiny offline model, shipped shapes data
"""

from trainers.models.blip import TinyBlipSpec
from trainers.recipe import (
    CaptionData,
    EarlyStopping,
    Evaluation,
    Freeze,
    Model,
    ParamGroup,
    Recipe,
    Stage,
    Training,
    Unfreeze,
    mean,
)

recipe = Recipe(
    name="blip_progressive",
    # The real model: BlipForConditionalGeneration.from_pretrained + BlipProcessor.from_pretrained.
    model=Model(
        id="Salesforce/blip-image-captioning-base", family="blip", demo=TinyBlipSpec(patch_size=4)
    ),  # --demo: 8x8 patches of 4 px, so each shape spans several
    data=CaptionData(
        train="data/captions/train.json",  # {filename: caption}
        val="data/captions/val.json",
        images="data/captions/images",
        max_length=60,
    ),
    # Freeze the vision tower, then train its last 3 encoder layers; the text decoder stays trainable.
    freeze=[
        Freeze("vision_model"),
        Unfreeze("vision_model.encoder.layers[-3:]"),
    ],
    # Thaw more of the vision tower as the decoder settles.
    stages=[
        Stage(epoch=3, unfreeze="vision_model.encoder.layers[-6:]"),
        Stage(epoch=6, unfreeze="vision_model.encoder.layers[-9:]"),
    ],
    # Or thaw on a signal instead of a calendar (ULMFiT): each stage opens at the first evaluation after 2
    # without improvement of the early-stopping score, and its LR ramps from 0 over 100 steps; early stopping
    # then ends the run only once both stages are open and the last has had its 5 evaluations
    # (docs/recipes.md, "Stages that open on a signal").
    # stages=[
    #     Stage(on_plateau=True, patience=2, unfreeze="vision_model.encoder.layers[-6:]", warmup_steps=100),
    #     Stage(on_plateau=True, patience=2, unfreeze="vision_model.encoder.layers[-9:]", warmup_steps=100),
    # ],
    # Vision tower at lr x0.1, everything else (the text decoder) at lr x1.0; no decay on bias/LayerNorm.
    param_groups=[
        ParamGroup("vision", match=r"^vision_model\.", lr_mult=0.1),
        ParamGroup("text", match=r"^text_decoder\.", lr_mult=1.0),
    ],
    training=Training(
        epochs=15,
        batch_size=6,
        lr=3e-5,
        warmup_steps=1000,
        weight_decay=0.01,
        max_grad_norm=2.0,
        seed=42,
    ),
    evaluation=Evaluation(
        metrics=("meteor", "rouge_l", "cider_d"),
        num_beams=5,
        no_repeat_ngram_size=2,
        repetition_penalty=1.1,
        length_penalty=1.0,
        max_length=60,
    ),
    early_stopping=EarlyStopping(metric=mean("meteor", "rouge_l", "cider_d"), patience=5, mode="max"),
    output_dir="outputs/{name}",
    # --demo: the tiny random-init BLIP on the shipped shapes captions, sized to learn in minutes on CPU.
    demo={
        "data.train": "data/shapes/train.json",
        "data.val": "data/shapes/val.json",
        "data.images": "data/shapes/images",
        "training.epochs": 10,  # 80 steps an epoch: the tiny model needs ~800 steps to tell the shapes apart
        "training.batch_size": 16,
        "training.lr": 1e-3,
        "training.warmup_steps": 20,
        "training.logging_steps": 5,
        "training.optim": "adamw_torch_fused",  # ~20% faster steps on CPU than the per-tensor AdamW
        "evaluation.batch_size": 48,
        "evaluation.max_length": 20,  # shapes captions are 9-11 tokens
        "output_dir": "outputs/{name}_demo",
    },
)
