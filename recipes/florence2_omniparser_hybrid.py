"""The OmniParser keyword freeze plus LoRA on the q/v projections (the hybrid of seed 000).

    accelerate launch launch.py recipes/florence2_omniparser_hybrid.py
    python launch.py recipes/florence2_omniparser_hybrid.py --dry-run

The base is frozen; LoRA r 8 (alpha 2r) goes on every `q_proj` / `v_proj` of the BART encoder and decoder; the
keyword-freeze modules (`lm_head`, the last two decoder layers, the projector) train fully as peft
`modules_to_save` and are saved with the adapter; `lm_head` trains its own copy of the tied shared embedding
(the input embedding stays frozen; the plan says so). q/v inside those two decoder layers are trained
fully there, not wrapped (the plan lists them). `best/` reloads with stock `PeftModel.from_pretrained`.
"""

from trainers.models.florence2 import FLORENCE2_BASE, TINY_TOWER_FILE, TinyFlorence2Spec
from trainers.recipe import EarlyStopping, Lora, Model, Recipe, Training, Unfreeze
from trainers.tasks.prompted_generation import PromptedData, PromptedEval

recipe = Recipe(
    name="florence2_omniparser_hybrid",
    model=Model(
        id=FLORENCE2_BASE,
        family="florence2",
        demo=TinyFlorence2Spec(image_size=64, vision_weights=TINY_TOWER_FILE),
    ),
    data=PromptedData(
        train="data/fabric/train.jsonl",
        val="data/fabric/val.jsonl",
        images="data/fabric/train/JPEGImages",
        val_images="data/fabric/val/JPEGImages",
    ),
    # lm_head and the projector as modules_to_save: the head trains its own copy of the tied embedding (an
    # Unfreeze("lm_head") rule would select the shared tensor under all its aliases: three more 39M copies)
    lora=Lora(
        target_modules=("q_proj", "v_proj"),
        r=8,
        dropout=0.05,
        modules_to_save=("lm_head", "model.multi_modal_projector"),
    ),
    freeze=[Unfreeze("model.language_model.decoder.layers[-2:]")],  # with LoRA the base starts frozen
    training=Training(epochs=10, batch_size=8, lr=1e-5, warmup_steps=0, logging_steps=10),
    evaluation=PromptedEval(num_beams=3, max_new_tokens=256),
    early_stopping=EarlyStopping(metric="map_50", mode="max", patience=3),
    demo={
        "lora.dropout": 0.0,
        "training.epochs": 4,
        "training.batch_size": 16,
        "training.lr": 3e-3,
        "training.warmup_steps": 10,
        "evaluation.max_new_tokens": 32,
        "evaluation.batch_size": 36,
        "reporting.wandb": False,
        "output_dir": "outputs/{name}_demo",
    },
)
