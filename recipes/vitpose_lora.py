"""ViTPose keypoints with LoRA: adapters on the backbone's attention query/value, the keypoint head trained fully.

    accelerate launch launch.py recipes/vitpose_lora.py
    python launch.py recipes/vitpose_lora.py --dry-run       # plan: trainable counts of the real model (meta device)
    python launch.py recipes/vitpose_lora.py --demo          # tiny offline ViTPose on the shipped data/stick_figures
    python launch.py recipes/vitpose_lora.py evaluation.best_metric=oks_ap
    python -m trainers.predict outputs/vitpose_lora --images imgs/ --out preds.jsonl --draw [--box x,y,w,h]

`usyd-community/vitpose-base-simple` (`VitPoseForPoseEstimation`, ViT-B on 256x192 crops, 17 COCO keypoints)
with `VitPoseImageProcessorPil`. LoRA r 16, alpha 32 on `query`/`value` of the 12 backbone layers; the head
(`head`: one 3x3 conv to a 64x48 heatmap per keypoint) trained fully (`modules_to_save`), lr 2e-4. The loss
is ours (the model has none): heatmap MSE with per-joint visibility weights against sigma-2 Gaussians (mmpose's
`JointsMSELoss(use_target_weight=True)`); evaluation decodes with the processor's post-processing and reports
PCK@0.2 (box-normalised), mean pixel error and OKS AP. Data: COCO keypoints JSON, one instance per annotation,
cut out of its image around its box (1.25 padding). COCO's 17-keypoint skeleton is built in; another skeleton
is declared with `data.skeleton=Skeleton(keypoints=..., flip_pairs=..., sigmas=...)` (the demo's is). `best/`
is a stock peft adapter:
`PeftModel.from_pretrained(VitPoseForPoseEstimation.from_pretrained(base), "outputs/vitpose_lora/best")`.
"""

from trainers.data.augment import ColorJitter
from trainers.models.vitpose import VITPOSE_BASE, TinyVitPoseSpec
from trainers.recipe import Augment, EarlyStopping, Lora, Model, RandomResizedCrop, Recipe, Training
from trainers.tasks.pose import PoseData, PoseEval
from trainers.tasks.pose.stick_figures import STICK_FIGURE

recipe = Recipe(
    name="vitpose_lora",
    # The real model: VitPoseForPoseEstimation.from_pretrained + VitPoseImageProcessorPil.from_pretrained.
    model=Model(id=VITPOSE_BASE, family="vitpose", demo=TinyVitPoseSpec()),
    data=PoseData(
        train="data/coco/person_keypoints_train.json",  # COCO keypoints JSON; file_names relative to `images`
        val="data/coco/person_keypoints_val.json",
        images="data/coco/images",
        skeleton=None,  # None: COCO's 17 keypoints (flip pairs and OKS sigmas built in)
        # training crops only: a mirror half the time (left/right keypoints swap), rotation within 30 degrees
        # about the box centre, a zoom into 70-100% of the crop, colour jitter; keypoints follow the pixels
        augment=Augment(
            hflip=0.5,
            rotate_degrees=30.0,
            random_resized_crop=RandomResizedCrop(scale=(0.7, 1.0)),
            color_jitter=ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2),
        ),
    ),
    lora=Lora(target_modules=("query", "value"), r=16, alpha=32, dropout=0.1, modules_to_save=("head",)),
    training=Training(epochs=30, batch_size=32, lr=2e-4, weight_decay=0.1, logging_steps=50),
    evaluation=PoseEval(
        batch_size=64
    ),  # pck, mean_pixel_error, oks_ap(_50/_75); eval/skeletons.png each time
    early_stopping=EarlyStopping(metric="pck", mode="max", patience=5),
    # --demo: 512 + 24 images of 80 px stick figures (595 + 27 instances, 11 keypoints). The tiny model is random
    # init, so there is nothing pretrained to keep in its patch and position embeddings: they train fully too
    # (LoRA on random features alone stays below the mean-pose baseline), at a high constant lr, without
    # augmentation. On the first 64 training images alone it stopped near PCK 0.81-0.87 (20-40 epochs), barely
    # above the mean pose's 0.78; 512 images for 25 epochs reach 0.95-0.98 (docs/models/vitpose.md).
    demo={
        "data.train": "data/stick_figures/train.json",
        "data.val": "data/stick_figures/val.json",
        "data.images": "data/stick_figures/images",
        "data.skeleton": STICK_FIGURE,
        "data.augment": None,
        "lora.dropout": 0.0,
        "lora.modules_to_save": ("head", "backbone.embeddings"),
        "training.epochs": 25,
        "training.lr_scheduler": "constant",
        "training.batch_size": 8,
        "training.lr": 5e-3,
        "training.weight_decay": 0.0,
        "training.logging_steps": 5,
        "early_stopping.patience": 25,
        "reporting.wandb": False,
    },
)
