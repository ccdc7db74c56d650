"""Florence-2 with LoRA (seed 001): fabric defects (wrinkle / drop / broken) as OD, dense region captions and
phrase grounding from one JSONL.

    python -m trainers.tasks.prompted_generation.voc_to_jsonl --voc data/fabric/train/Annotations \
        --images data/fabric/train/JPEGImages --out data/fabric/train.jsonl --flip
    accelerate launch launch.py recipes/florence2_lora.py
    python launch.py recipes/florence2_lora.py --dry-run     # the real base model counted on the meta device
    python launch.py recipes/florence2_lora.py --demo        # tiny offline Florence-2 on the shipped data/fabric
    python launch.py recipes/florence2_lora.py "lora.target_regex=model\\.language_model\\..*\\.(q_proj|k_proj|v_proj|fc1|fc2)|lm_head"
                                                             # the vision-frozen variant: no adapter in the vision tower

LoRA r 8, alpha 2r, on q_proj, k_proj, v_proj, lm_head, fc1, fc2 of the vision and language parts together
(written as one regex so that the vision-frozen variant is one override). In native naming the vision tower
has no q/k/v projections (its attention is a fused `qkv`), so q/k/v hit the BART encoder/decoder only, fc1/fc2
both towers; the plan lists the modules per tower. `lm_head` is tied to the shared embedding: with
`lora.tied_weights="untie"` the head gets its own copy before wrapping (the plan says so), so merging the
adapter cannot change the input embedding. The seed's `Conv2d` / `linear` targets: only the patch-embedding
convs (`model.vision_tower.convs.N.conv`, groups=1) can take LoRA; the depthwise `conv1`/`conv2` (groups =
channels) are refused by peft unless r divides by groups, and the validation says so. lr 1e-6 for 10 epochs,
bf16 on GPU (training.precision=auto; fp16 is refused: NaN in Florence-2's backward). `lora.use_dora=true`
switches to DoRA. `best/` is a stock peft adapter:
`PeftModel.from_pretrained(Florence2ForConditionalGeneration.from_pretrained(base), "outputs/florence2_lora/best")`.
"""

from trainers.models.florence2 import FLORENCE2_BASE, TINY_TOWER_FILE, TinyFlorence2Spec
from trainers.recipe import EarlyStopping, Lora, Model, Recipe, Training
from trainers.tasks.prompted_generation import PromptedData, PromptedEval

TARGETS = r"model\.(vision_tower|language_model)\..*\.(q_proj|k_proj|v_proj|fc1|fc2)|lm_head"

recipe = Recipe(
    name="florence2_lora",
    # The real model: Florence2ForConditionalGeneration.from_pretrained + Florence2Processor.from_pretrained.
    model=Model(
        id=FLORENCE2_BASE,
        family="florence2",
        demo=TinyFlorence2Spec(image_size=64, vision_weights=TINY_TOWER_FILE),
    ),
    data=PromptedData(
        train="data/fabric/train.jsonl",  # {"image", "prefix", "suffix"} lines (voc_to_jsonl writes them)
        val="data/fabric/val.jsonl",
        images="data/fabric/train/JPEGImages",
        val_images="data/fabric/val/JPEGImages",
        order="curriculum",  # OD -> DENSE_REGION_CAPTION -> CAPTION_TO_PHRASE_GROUNDING each epoch; or "shuffled"
    ),
    lora=Lora(target_regex=TARGETS, r=8, dropout=0.05, use_dora=False, tied_weights="untie"),
    training=Training(epochs=10, batch_size=8, lr=1e-6, warmup_steps=0, logging_steps=10),
    evaluation=PromptedEval(num_beams=3, max_new_tokens=256),
    early_stopping=EarlyStopping(metric="map_50", mode="max", patience=3),
    # --demo: the tiny Florence-2 (its DaViT pre-trained on generated fabric images, the rest random init) on the
    # shipped fabric set (1800 train lines: 300 images, their mirrored copies, 3 tasks). The vision-frozen
    # variant: LoRA r 16 on the language encoder's linear layers; the decoder, LM head, input embedding and
    # projector trained fully (modules_to_save), lr 1e-3 after 100 warm-up steps. With LoRA on the decoder too
    # the model never read the image (one generation for every val image, mAP@0.5 0); this one goes from
    # mAP@0.5 0 (first 3 evals) to 0.114 at epoch 14.
    demo={
        "lora.r": 16,
        "lora.dropout": 0.0,
        "lora.target_regex": r"model\.language_model\.encoder\..*\.(q_proj|k_proj|v_proj|out_proj|fc1|fc2)",
        "lora.modules_to_save": (
            "lm_head",
            "model.language_model.shared",
            "model.multi_modal_projector",
            "model.language_model.decoder",
        ),
        "training.epochs": 14,
        "training.batch_size": 8,
        "training.lr": 1e-3,
        "training.warmup_steps": 100,
        "training.lr_scheduler": "constant_with_warmup",
        "training.logging_steps": 25,
        "early_stopping.patience": 14,
        "evaluation.max_new_tokens": 32,
        "evaluation.batch_size": 36,
        "reporting.wandb": False,
        "output_dir": "outputs/{name}_demo",
    },
)
