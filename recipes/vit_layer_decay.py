"""ViT image classification, full fine-tune with layer-wise learning-rate decay (as BEiT and MAE fine-tune ViT-B).

    python launch.py recipes/vit_layer_decay.py                          # google/vit-base-patch16-224-in21k, your data
    python launch.py recipes/vit_layer_decay.py training.layer_decay=none   # the same run at one flat LR
    python launch.py recipes/vit_layer_decay.py --dry-run                # plan, with the per-layer LR table
    python launch.py recipes/vit_layer_decay.py --demo                   # tiny offline ViT on data/tiny_classes

Every parameter trains. Layer i of the ViT's 13 layers (patch and position embeddings at 0, the 12 encoder
blocks at 1-12) trains at `lr * 0.75 ** (13 - i)`: the embeddings at 2.4% of `lr`, the last block at 75%, the
final norm and the new classifier at `lr`. The layers come from the `vit` family's declared layout
(`trainers/models/vit.py`), so no recipe regex names them. `training.layer_decay=0.65` is BEiT's ViT-B value.
"""

from trainers.models.vit import VIT_BASE_IN21K, TinyVitSpec
from trainers.recipe import (
    Augment,
    ClassificationData,
    ClassificationEval,
    EarlyStopping,
    Model,
    RandomResizedCrop,
    Recipe,
    Training,
)

recipe = Recipe(
    name="vit_layer_decay",
    model=Model(id=VIT_BASE_IN21K, family="vit", demo=TinyVitSpec()),
    data=ClassificationData(
        train="data/classes/train",  # one subfolder per class (train/cat/001.jpg), or a CSV / JSONL list
        val="data/classes/val",
        augment=Augment(hflip=0.5, random_resized_crop=RandomResizedCrop(scale=(0.5, 1.0))),
    ),
    training=Training(
        epochs=5,
        batch_size=32,
        lr=1e-4,
        layer_decay=0.75,
        weight_decay=0.05,
        warmup_steps=50,
        logging_steps=20,
    ),
    evaluation=ClassificationEval(batch_size=64),
    early_stopping=EarlyStopping(metric="accuracy", mode="max", patience=3),
    # --demo: the same data and schedule as vit_lora's demo, every parameter training.
    demo={
        "data.train": "data/tiny_classes/train",
        "data.val": "data/tiny_classes/val",
        "data.augment.random_resized_crop.scale": (0.85, 1.0),
        "training.epochs": 10,
        "training.batch_size": 16,
        "training.lr": 3e-3,  # measured better than 1e-3 for both layer decay and a flat LR (docs/recipes.md)
        "training.warmup_steps": 0,
        "training.logging_steps": 4,
        "reporting.wandb": False,
    },
)
