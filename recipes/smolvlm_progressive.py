"""SmolVLM-256M-Instruct (Idefics3) fine-tuned fully on chat data with its vision tower opened progressively: the
SigLIP encoder starts frozen, its last blocks thaw in stages at a tenth of the learning rate, while the
connector and the language model train from the start.

    accelerate launch launch.py recipes/smolvlm_progressive.py data.train=my/train.jsonl data.val=my/val.jsonl
    python launch.py recipes/smolvlm_progressive.py --dry-run   # the real 256M model counted on the meta device
    python launch.py recipes/smolvlm_progressive.py --demo      # tiny offline SmolVLM on the shipped data/chat_shapes
"""

from trainers.models.vlm_chat import SMOLVLM_256M, TinyChatVlmSpec
from trainers.recipe import EarlyStopping, Freeze, Model, ParamGroup, Recipe, Stage, Training
from trainers.tasks.chat import ChatData, ChatEval

recipe = Recipe(
    name="smolvlm_progressive",
    # The real model: Idefics3ForConditionalGeneration.from_pretrained + Idefics3Processor.from_pretrained.
    model=Model(id=SMOLVLM_256M, family="smolvlm", demo=TinyChatVlmSpec()),
    data=ChatData(
        train="data/chat_shapes/train.jsonl",
        val="data/chat_shapes/val.jsonl",
        images="data/chat_shapes/images",
        max_length=2048,
    ),
    freeze=[Freeze("model.vision_model")],
    # the last encoder block thaws at epoch 2, the one before it at epoch 4 (the tiny twin has 2 blocks;
    # the real encoder has 12: widen the slices, e.g. layers[-3:] then layers[-6:])
    stages=[
        Stage(epoch=2, unfreeze="model.vision_model.encoder.layers[-1:]"),
        Stage(epoch=4, unfreeze="model.vision_model.encoder.layers[-2:]"),
    ],
    param_groups=[ParamGroup("vision", match=r"^model\.vision_model\.", lr_mult=0.1)],
    training=Training(epochs=6, batch_size=4, lr=2e-5, warmup_steps=50, weight_decay=0.01, logging_steps=10),
    evaluation=ChatEval(metrics=("exact_match", "answer_f1"), max_new_tokens=64),
    early_stopping=EarlyStopping(metric="exact_match", mode="max", patience=3),
    demo={
        "training.epochs": 8,
        "training.batch_size": 16,
        "training.lr": 3e-3,
        "training.warmup_steps": 10,
        "early_stopping.patience": 8,
        "evaluation.max_new_tokens": 4,
        "evaluation.batch_size": 40,
        "reporting.wandb": False,
        "output_dir": "outputs/{name}_demo",
    },
)
