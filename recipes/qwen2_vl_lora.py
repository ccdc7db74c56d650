"""Qwen2-VL-2B-Instruct with LoRA on the language model's attention and MLP; the vision tower and the merger
frozen. Conversations as JSONL (`{"images": [...], "messages": [...]}`), rendered through Qwen2-VL's chat
template, loss on the assistant's tokens only, evaluated by generating the last answer.

    accelerate launch launch.py recipes/qwen2_vl_lora.py data.train=my/train.jsonl data.val=my/val.jsonl
    python launch.py recipes/qwen2_vl_lora.py --dry-run     # the real 2B model counted on the meta device
    python launch.py recipes/qwen2_vl_lora.py --demo        # tiny offline Qwen2-VL on the shipped data/chat_shapes

LoRA r 16, alpha 32 on q/k/v/o and gate/up/down projections of `model.language_model` only (the regex keeps
the vision blocks' `qkv`/`proj`/`fc1`/`fc2` out). `data.max_pixels` caps Qwen's dynamic resolution: 401408
pixels = at most 512 image tokens of 28 x 28 px per image. `best/` is a stock peft adapter:
`PeftModel.from_pretrained(Qwen2VLForConditionalGeneration.from_pretrained(base), "outputs/qwen2_vl_lora/best")`.
"""

from trainers.models.vlm_chat import QWEN2_VL_2B, TinyChatVlmSpec
from trainers.recipe import EarlyStopping, Lora, Model, Recipe, Training
from trainers.tasks.chat import ChatData, ChatEval

TARGETS = r"model\.language_model\.layers\.\d+\.(self_attn\.(q_proj|k_proj|v_proj|o_proj)|mlp\.(gate_proj|up_proj|down_proj))"

recipe = Recipe(
    name="qwen2_vl_lora",
    # The real model: Qwen2VLForConditionalGeneration.from_pretrained + Qwen2-VL's processor (images only).
    model=Model(id=QWEN2_VL_2B, family="qwen2-vl", demo=TinyChatVlmSpec()),
    data=ChatData(
        train="data/chat_shapes/train.jsonl",  # {"images": [...], "messages": [...]} lines
        val="data/chat_shapes/val.jsonl",
        images="data/chat_shapes/images",
        max_length=2048,
        max_pixels=401408,
    ),
    lora=Lora(target_regex=TARGETS, r=16, alpha=32, dropout=0.05),
    training=Training(epochs=3, batch_size=4, lr=2e-4, warmup_steps=50, logging_steps=10),
    evaluation=ChatEval(metrics=("exact_match", "answer_f1"), max_new_tokens=64),
    early_stopping=EarlyStopping(metric="exact_match", mode="max", patience=2),
    demo={
        "lora.r": 16,
        "lora.dropout": 0.0,
        # a random-init twin has nothing to adapt: its merger, embeddings and head train fully beside LoRA
        "lora.modules_to_save": ("model.visual.merger", "model.language_model.embed_tokens", "lm_head"),
        "training.epochs": 8,
        "training.batch_size": 16,
        "training.lr": 3e-3,
        "training.warmup_steps": 10,
        "training.logging_steps": 10,
        "early_stopping.patience": 6,
        "evaluation.max_new_tokens": 4,
        "evaluation.batch_size": 40,
        "data.max_pixels": None,
        "reporting.wandb": False,
        "output_dir": "outputs/{name}_demo",
    },
)
