"""The LoRA recipe of the multi-rank tests: adapters, a declared modules_to_save, a module trained through a
freeze rule and a progressive-unfreezing stage, dropout 0 (masks would repeat across ranks).

`same_length_captions` writes a training set whose captions all have one token count, so these runs compare
LoRA across ranks and ZeRO stages alone; captions of different lengths across ranks are covered by
test_ragged_captions.py (the loss is normalised by the step's global token count).
"""

from __future__ import annotations

from pathlib import Path

from conftest import tiny_recipe
from trainers.recipe import Lora, ParamGroup, Stage, Unfreeze


def lora_recipe(output_dir: Path, batch_size: int, train_json: Path):
    recipe = tiny_recipe(
        output_dir,
        epochs=2,
        batch_size=batch_size,
        lr=5e-3,
        lr_scheduler="constant",
        logging_steps=1,
        save_total_limit=1,
    )
    recipe.lora = Lora(
        target_modules=("query", "value"),
        r=4,
        dropout=0.0,
        modules_to_save=("text_decoder.cls.predictions.transform",),
    )
    recipe.freeze = [Unfreeze("vision_model.post_layernorm")]
    recipe.stages = [Stage(epoch=1, unfreeze="vision_model.encoder.layers[-1:]")]
    recipe.param_groups = [ParamGroup("lora", match=r"lora_", lr_mult=2.0)]
    recipe.data.train = str(train_json)
    recipe.data.max_train_samples = 32
    recipe.data.max_val_samples = 4
    return recipe


VIT_TRAIN_SAMPLES = 64  # 4 classes x 16, round robin: 4 steps an epoch at a global batch of 16


def vit_lora_recipe(output_dir: Path, batch_size: int):
    """The shipped `recipes/vit_lora.py --demo` (tiny ViT, LoRA on q_proj/v_proj, classifier in
    modules_to_save, dropout 0), shortened to 2 epochs of 64 images."""
    from conftest import ROOT
    from trainers.recipe import load_recipe

    return load_recipe(
        str(ROOT / "recipes" / "vit_lora.py"),
        [
            f"output_dir={output_dir}",
            f"training.batch_size={batch_size}",
            "training.epochs=2",
            f"data.max_train_samples={VIT_TRAIN_SAMPLES}",
            "training.logging_steps=1",
            "training.resume=never",
            "training.save_total_limit=1",
            "reporting.plots=false",
        ],
        demo=True,
    )


def importance_recipe(output_dir: Path, batch_size: int, steps: int = 3):
    """`recipes/vit_lora.py --demo` fully fine-tuned, set up for 3 steps of layer importance."""
    from conftest import ROOT
    from trainers.analysis.importance import analysis_overrides
    from trainers.recipe import load_recipe

    return load_recipe(
        str(ROOT / "recipes" / "vit_lora.py"),
        [
            "lora=none",
            "data.max_train_samples=32",
            f"training.batch_size={batch_size}",
            *analysis_overrides(steps, output_dir),
        ],
        demo=True,
    )


def same_length_captions(path: Path, n: int = 32) -> Path:
    """The first `n` shipped training captions that tokenize to the most common length."""
    import json
    from collections import Counter

    from conftest import SHAPES
    from trainers.models.blip import build_blip_tokenizer

    tokenizer = build_blip_tokenizer()
    captions = json.loads((SHAPES / "train.json").read_text())
    lengths = {k: len(tokenizer(v)["input_ids"]) for k, v in captions.items()}
    common = Counter(lengths.values()).most_common(1)[0][0]
    chosen = {k: v for k, v in captions.items() if lengths[k] == common}
    path.write_text(json.dumps(dict(list(chosen.items())[:n])))
    return path


DETR_TRAIN_SAMPLES = 64  # 4 steps an epoch at a global batch of 16


def one_object_images(path: Path, n: int = DETR_TRAIN_SAMPLES) -> Path:
    """The first `n` shipped tiny_boxes training images holding exactly one shape, as a COCO JSON.

    DETR's class loss is a weighted mean over each rank's queries, weighted by how many of them matched an
    object; with one object per image every rank's weights sum alike, so 2 ranks x 8 images average to
    exactly the loss of 16 images on one rank (the box losses are normalised by the global box count
    inside transformers already).
    """
    import json

    from conftest import ROOT

    coco = json.loads((ROOT / "data" / "tiny_boxes" / "train.json").read_text())
    counts: dict[int, int] = {}
    for ann in coco["annotations"]:
        counts[ann["image_id"]] = counts.get(ann["image_id"], 0) + 1
    images = [im for im in coco["images"] if counts.get(im["id"]) == 1][:n]
    keep = {im["id"] for im in images}
    annotations = [a for a in coco["annotations"] if a["image_id"] in keep]
    path.write_text(json.dumps({**coco, "images": images, "annotations": annotations}))
    return path


def detr_lora_recipe(output_dir: Path, batch_size: int, train_json: Path):
    """The shipped `recipes/detr_lora.py --demo` (tiny DETR, LoRA on q_proj/v_proj, both heads and the
    backbone trained fully, dropout 0, no augmentation, as the demo), 2 epochs of 64 one-object images. lr 5e-4
    instead of the demo's 5e-3: Adam turns float32 reduction-order noise in near-zero gradients into steps
    of ~lr, so the weight difference scales with it (2.7e-5 at 5e-3 here)."""
    from conftest import ROOT
    from trainers.recipe import load_recipe

    return load_recipe(
        str(ROOT / "recipes" / "detr_lora.py"),
        [
            f"output_dir={output_dir}",
            f"training.batch_size={batch_size}",
            "training.epochs=2",
            f"data.train={train_json}",
            "training.lr=5e-4",
            "training.logging_steps=1",
            "training.resume=never",
            "training.save_total_limit=1",
            "reporting.plots=false",
        ],
        demo=True,
    )


VITPOSE_TRAIN_SAMPLES = 64  # stick-figure instances: 4 steps an epoch at a global batch of 16


def vitpose_lora_recipe(output_dir: Path, batch_size: int):
    """The shipped `recipes/vitpose_lora.py --demo` (tiny ViTPose, LoRA on query/value, head and embeddings
    trained fully, no augmentation and a constant lr, as the demo; dropout 0), shortened to 2 epochs of 64
    instances, at lr 5e-4 instead of 5e-3: at 5e-3 float32 reduction-order noise grew into weight differences
    that moved a decoded keypoint by up to 1.3 px (an argmax between two near-equal heatmap pixels)."""
    from conftest import ROOT
    from trainers.recipe import load_recipe

    return load_recipe(
        str(ROOT / "recipes" / "vitpose_lora.py"),
        [
            f"output_dir={output_dir}",
            f"training.batch_size={batch_size}",
            "training.epochs=2",
            f"data.max_train_samples={VITPOSE_TRAIN_SAMPLES}",
            "training.logging_steps=1",
            "training.resume=never",
            "training.lr=5e-4",
            "training.save_total_limit=1",
            "reporting.plots=false",
        ],
        demo=True,
    )


FLORENCE_TRAIN_SAMPLES = (
    32  # the first 32 shipped fabric lines in curriculum order: 4 steps at a global batch of 8
)


def florence_lora_recipe(output_dir: Path, batch_size: int, recipe: str = "florence2_lora.py"):
    """The shipped `recipes/florence2_lora.py --demo` (tiny Florence-2, LoRA on the language encoder; decoder, LM head,
    embedding and projector in modules_to_save, curriculum order), shortened to 1 epoch of 32 lines and 6 val
    lines generated with 3 beams. `recipe="florence2_omniparser_freeze.py"`: the keyword-freeze recipe instead."""
    from conftest import ROOT
    from trainers.recipe import load_recipe

    return load_recipe(
        str(ROOT / "recipes" / recipe),
        [
            f"output_dir={output_dir}",
            f"training.batch_size={batch_size}",
            "training.epochs=1",
            f"data.max_train_samples={FLORENCE_TRAIN_SAMPLES}",
            "data.max_val_samples=6",
            "training.logging_steps=1",
            "training.warmup_steps=0",
            "training.resume=never",
            "training.save_total_limit=1",
            "reporting.plots=false",
            "evaluation.max_new_tokens=12",
            "evaluation.batch_size=3",
            "early_stopping=none",
        ],
        demo=True,
    )
