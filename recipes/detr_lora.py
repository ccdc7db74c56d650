"""DETR object detection with LoRA: adapters on the attention query/value projections, new heads trained fully.

    python launch.py recipes/detr_lora.py                     # facebook/detr-resnet-50 (no_timm), your COCO data
    python launch.py recipes/detr_lora.py lora=none           # the full fine-tune baseline
    python launch.py recipes/detr_lora.py data.backbone=freeze_stage1   # also train the backbone, but stage 1
    python launch.py recipes/detr_lora.py --dry-run           # plan: trainable counts, LoRA targets, groups
    python launch.py recipes/detr_lora.py --demo              # tiny offline DETR on the shipped data/tiny_boxes_large
    python -m trainers.predict outputs/detr_lora --images imgs/ --out preds.jsonl --draw

The seed's settings: LoRA r 8, alpha 16 on `q_proj`/`v_proj` (encoder self-attention, decoder self- and
cross-attention: transformers 5 names), `class_labels_classifier` and `bbox_predictor` re-initialised for the
data's categories and trained fully (`modules_to_save`), lr 2e-4. `revision="no_timm"`: the checkpoint
branch with the transformers ResNet backbone (timm is not installed). The backbone comes out of DETR
frozen; `data.backbone` says so explicitly ("frozen"), or "unfreeze", or "freeze_stage1" (the original
DETR's choice). `best/` is a stock peft adapter:
`PeftModel.from_pretrained(DetrForObjectDetection.from_pretrained(base, revision="no_timm", ...), "outputs/detr_lora/best")`.
"""

from trainers.data.augment import ColorJitter
from trainers.models.detr import DETR_NO_TIMM, DETR_RESNET50, TinyDetrSpec
from trainers.recipe import (
    Augment,
    DetectionData,
    DetectionEval,
    EarlyStopping,
    Lora,
    Model,
    RandomResizedCrop,
    Recipe,
    Training,
)

recipe = Recipe(
    name="detr_lora",
    # The real model: DetrForObjectDetection.from_pretrained + DetrImageProcessorPil.from_pretrained.
    model=Model(id=DETR_RESNET50, family="detr", revision=DETR_NO_TIMM, demo=TinyDetrSpec()),
    data=DetectionData(
        train="data/coco/train.json",  # COCO detection JSON; file_names relative to `images`
        val="data/coco/val.json",
        images="data/coco/images",
        backbone="frozen",  # or "unfreeze", or "freeze_stage1"
        # training images only: a mirror half the time, a random rescaled crop of 60-100% of the area (boxes
        # follow; boxes left under 16 px² are dropped and counted), colour jitter
        augment=Augment(
            hflip=0.5,
            random_resized_crop=RandomResizedCrop(scale=(0.6, 1.0)),
            min_box_area=16.0,
            color_jitter=ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2),
        ),
    ),
    lora=Lora(
        target_modules=("q_proj", "v_proj"),
        r=8,
        alpha=16,
        dropout=0.1,
        modules_to_save=("class_labels_classifier", "bbox_predictor"),
    ),
    training=Training(
        epochs=50, batch_size=4, lr=2e-4, weight_decay=1e-4, max_grad_norm=0.1, logging_steps=50
    ),
    evaluation=DetectionEval(batch_size=8),  # map, map_50, map_75, ap_<class>; eval/boxes.png per evaluation
    early_stopping=EarlyStopping(metric="map", mode="max", patience=5),
    # --demo: 1,280 images of 64 px shapes (1-2 per image, 3 classes; data/tiny_boxes holds their first 160 for
    # the tests); a random-init DETR needs a higher LR and many steps. 160 images for 100 epochs (1,000 steps)
    # gave mAP@0.5 0.33-0.81 over four seeds; 1,280 for 30 epochs (2,400 steps): docs/models/detr.md.
    demo={
        "data.train": "data/tiny_boxes_large/train.json",
        "data.val": "data/tiny_boxes_large/val.json",
        "data.images": "data/tiny_boxes_large/images",
        "data.backbone": "unfreeze",  # random init: nothing pretrained to keep
        "data.augment": None,
        "lora.dropout": 0.0,
        "lora.r": 16,
        "lora.alpha": 32,
        "training.epochs": 30,
        # a constant 5e-3 over 2,400 steps went to NaN boxes at seed 1 (epoch 15); warm-up + cosine did not
        "training.lr_scheduler": "cosine",
        "training.warmup_steps": 100,
        "training.batch_size": 16,
        "training.lr": 5e-3,
        "training.max_grad_norm": 1.0,
        "training.logging_steps": 10,
        "early_stopping.patience": 30,
        "reporting.wandb": False,
    },
)
